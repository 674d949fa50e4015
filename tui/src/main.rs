//! `retouch`: see `retouch --help`.

fn main() -> std::process::ExitCode {
    retouch_tui::program::main()
}
