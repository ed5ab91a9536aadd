//! The one error every validation rule returns: which field, and what is wrong with it.

/// An invalid value, naming the field as the client wrote it (`queue`, `jobs[3].key`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into() }
    }

    /// The same error, its field prefixed (`key` inside entry 3 becomes `jobs[3].key`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// `value` must be at least `min` (API.md "Numbers").
pub fn at_least(field: &str, value: i64, min: i64) -> Result<i64, ValidationError> {
    if value < min {
        Err(ValidationError::new(field, format!("must be at least {min}, got {value}")))
    } else {
        Ok(value)
    }
}

/// `value` must lie in `min..=max`.
pub fn within(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ValidationError> {
    if value < min || value > max {
        Err(ValidationError::new(field, format!("must be between {min} and {max}, got {value}")))
    } else {
        Ok(value)
    }
}
