//! The submit form: text fields, focus, and errors from validation.

use retouch_api::v1 as pb;

use crate::request::{FieldError, JobRequest};

/// The form's fields, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormField {
    /// Matting or removal (left/right toggles).
    Api,
    /// Image URL or path.
    Image,
    /// Mask URL or path.
    Mask,
    /// Removal seed.
    Seed,
    /// Removal kernel size.
    KernelSize,
}

impl FormField {
    /// Every field in tab order.
    pub const ALL: [FormField; 5] = [
        FormField::Api,
        FormField::Image,
        FormField::Mask,
        FormField::Seed,
        FormField::KernelSize,
    ];

    /// The label shown, also the name errors use.
    pub fn label(self) -> &'static str {
        match self {
            FormField::Api => "api",
            FormField::Image => "image",
            FormField::Mask => "mask",
            FormField::Seed => "seed",
            FormField::KernelSize => "kernel_size",
        }
    }
}

/// The form's contents.
#[derive(Debug, Clone)]
pub struct SubmitForm {
    /// The API.
    pub api: pb::Api,
    /// Image text.
    pub image: String,
    /// Mask text.
    pub mask: String,
    /// Seed text.
    pub seed: String,
    /// Kernel size text.
    pub kernel_size: String,
    /// Focused field.
    pub focus: FormField,
    /// Problems found by the last validation.
    pub errors: Vec<FieldError>,
}

impl Default for SubmitForm {
    fn default() -> Self {
        SubmitForm {
            api: pb::Api::InstanceMatting,
            image: String::new(),
            mask: String::new(),
            seed: String::new(),
            kernel_size: String::new(),
            focus: FormField::Image,
            errors: Vec::new(),
        }
    }
}

impl SubmitForm {
    /// Fields that apply to the chosen API.
    pub fn fields(&self) -> &'static [FormField] {
        if self.api == pb::Api::ObjectRemoval {
            &FormField::ALL
        } else {
            &FormField::ALL[..3]
        }
    }

    /// Moves focus forward (or back).
    pub fn cycle_focus(&mut self, forward: bool) {
        let fields = self.fields();
        let at = fields.iter().position(|f| *f == self.focus).unwrap_or(0);
        let n = fields.len();
        self.focus = fields[if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        }];
    }

    /// Types a character into the focused field.
    pub fn type_char(&mut self, c: char) {
        match self.focus {
            FormField::Api => self.toggle_api(),
            FormField::Image => self.image.push(c),
            FormField::Mask => self.mask.push(c),
            FormField::Seed => self.seed.push(c),
            FormField::KernelSize => self.kernel_size.push(c),
        }
    }

    /// Deletes the last character of the focused field.
    pub fn backspace(&mut self) {
        match self.focus {
            FormField::Api => {}
            FormField::Image => drop(self.image.pop()),
            FormField::Mask => drop(self.mask.pop()),
            FormField::Seed => drop(self.seed.pop()),
            FormField::KernelSize => drop(self.kernel_size.pop()),
        }
    }

    /// Switches between matting and removal.
    pub fn toggle_api(&mut self) {
        self.api = if self.api == pb::Api::ObjectRemoval {
            pb::Api::InstanceMatting
        } else {
            pb::Api::ObjectRemoval
        };
        if !self.fields().contains(&self.focus) {
            self.focus = FormField::Api;
        }
    }

    /// The text of a field.
    pub fn value(&self, field: FormField) -> String {
        match field {
            FormField::Api => crate::state::table::api_name(self.api).to_owned(),
            FormField::Image => self.image.clone(),
            FormField::Mask => self.mask.clone(),
            FormField::Seed => self.seed.clone(),
            FormField::KernelSize => self.kernel_size.clone(),
        }
    }

    /// Validates the form; on failure the errors are kept for display.
    pub fn validate(&mut self) -> Option<JobRequest> {
        let mut errors = Vec::new();
        let removal = self.api == pb::Api::ObjectRemoval;
        let seed = parse_number::<i64>(removal, &self.seed, "seed", &mut errors);
        let kernel_size =
            parse_number::<u32>(removal, &self.kernel_size, "kernel_size", &mut errors);
        match JobRequest::new(self.api, &self.image, &self.mask, seed, kernel_size) {
            Ok(request) if errors.is_empty() => {
                self.errors.clear();
                Some(request)
            }
            Ok(_) => {
                self.errors = errors;
                None
            }
            Err(more) => {
                errors.extend(more);
                self.errors = errors;
                None
            }
        }
    }
}

fn parse_number<T: std::str::FromStr>(
    applies: bool,
    text: &str,
    field: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let text = text.trim();
    if !applies || text.is_empty() {
        return None;
    }
    match text.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(FieldError {
                field,
                message: format!("must be a whole number, got {text:?}"),
            });
            None
        }
    }
}
