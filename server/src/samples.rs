//! Samples (being written).
