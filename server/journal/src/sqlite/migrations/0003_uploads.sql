-- Images stored through UploadImage, by content (sha256). The bytes live in
-- the object store; this is what retouchd knows of them.
CREATE TABLE uploads (
    sha256 TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    filename TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX uploads_by_age ON uploads (created_at_ms);
