//! Names users choose: queues, keys, groups, pools, worker names.

use crate::validation::ValidationError;

/// Queue and pool names: `[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`.
pub fn check_queue_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let bytes = name.as_bytes();
    let ok_first = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
    let ok_rest = bytes[1.min(bytes.len())..]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok_first && ok_rest && bytes.len() <= 64 {
        Ok(())
    } else {
        Err(ValidationError::new(field, "must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"))
    }
}

/// Keys and groups: 1 to 128 bytes of printable UTF-8 (no control characters).
pub fn check_label(field: &str, label: &str) -> Result<(), ValidationError> {
    if label.is_empty() || label.len() > 128 {
        return Err(ValidationError::new(field, "must be 1 to 128 bytes"));
    }
    if label.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must be printable (no control characters)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_pattern() {
        for ok in ["a", "emails", "Q1", "a.b:c-d_e", &"x".repeat(64)] {
            assert!(check_queue_name("queue", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(65)] {
            let err = check_queue_name("queue", bad).unwrap_err();
            assert_eq!(err.field, "queue");
        }
    }

    #[test]
    fn labels_are_printable_and_bounded() {
        assert!(check_label("key", "user:42 ünïcode").is_ok());
        assert!(check_label("key", &"k".repeat(128)).is_ok());
        assert!(check_label("key", "").is_err());
        assert!(check_label("key", &"k".repeat(129)).is_err());
        assert!(check_label("group", "a\nb").is_err());
    }
}
