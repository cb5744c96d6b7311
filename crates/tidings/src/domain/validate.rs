//! Parse-don't-validate checks for values that arrive through the API.
//!
//! Each check names the field it refused and why, so the API can answer with both.

use std::fmt;

/// A refused input value: which field (dotted path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Reads a typed value from JSON, naming the offending field (as a dotted path) on error.
pub fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        FieldError::new(field_of(&path, &reason), reason)
    })
}

/// The dotted field an input error is about: serde reports a missing field at its parent's
/// path, so the field's own name is taken from the message.
fn field_of(path: &str, reason: &str) -> String {
    let parent = if path == "." { "" } else { path };
    match reason
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None => parent.to_owned(),
    }
}

/// What the operator allows for webhook URLs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlRules {
    /// Accept `http://` (development only; the seed requires SSL).
    pub allow_http: bool,
}

pub const MAX_TEXT: usize = 200;
pub const MAX_LONG_TEXT: usize = 10_000;
pub const MAX_URL: usize = 2_000;

/// A short, non-blank text such as a name.
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    text(field, value, MAX_TEXT)
}

/// Any text up to `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An e-mail address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn email(field: &str, value: &str) -> Result<(), FieldError> {
    text(field, value, 254)?;
    let bad = || FieldError::new(field, format!("`{value}` is not an e-mail address"));
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if local.is_empty()
        || domain.contains('@')
        || value.chars().any(char::is_whitespace)
        || !domain_ok
    {
        return Err(bad());
    }
    Ok(())
}

/// A phone number: digits with an optional leading `+`, spaces and dashes allowed.
pub fn phone(field: &str, value: &str) -> Result<(), FieldError> {
    let digits = value.trim_start_matches('+');
    let ok = !digits.is_empty()
        && value.len() <= 32
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        && digits.chars().any(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{value}` is not a phone number"),
        ))
    }
}

/// A language or locale code such as `nl`, `en` or `en-GB`.
pub fn language(field: &str, value: &str) -> Result<(), FieldError> {
    let mut parts = value.splitn(2, ['-', '_']);
    let lang = parts.next().unwrap_or_default();
    let region_ok = parts
        .next()
        .is_none_or(|r| (2..=3).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric()));
    if (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_lowercase()) && region_ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{value}` is not a language code like `nl` or `en-GB`"),
        ))
    }
}

/// A colour as `#rrggbb` (or `#rgb`).
pub fn colour(field: &str, value: &str) -> Result<(), FieldError> {
    let hex = value.strip_prefix('#').unwrap_or("");
    if (hex.len() == 6 || hex.len() == 3) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{value}` is not a colour like `#000000`"),
        ))
    }
}

/// A webhook URL: absolute, `https://` (or `http://` when allowed), with a host, no
/// credentials and no fragment. Answers its normalised form (the `url` crate's
/// serialization), which is what is stored and what webhooks are sent to. Spaces, control
/// characters and backslashes, which a URL parser silently drops or turns into `/`, are
/// refused: the URL stored must be the URL the client meant.
pub fn webhook_url(field: &str, value: &str, rules: UrlRules) -> Result<String, FieldError> {
    if value.len() > MAX_URL {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_URL} characters"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '\\')
    {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain {c:?} (spaces, control characters and backslashes are refused)"
            ),
        ));
    }
    let url = url::Url::parse(value)
        .map_err(|e| FieldError::new(field, format!("`{value}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if rules.allow_http => {}
        "http" => {
            return Err(FieldError::new(
                field,
                "must be an https:// URL (receivers must use SSL; http:// is allowed only when \
                 Tidings runs with TIDINGS_ALLOW_HTTP=true)",
            ))
        }
        other => {
            return Err(FieldError::new(
                field,
                format!("scheme `{other}` is not allowed; use https://"),
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(field, "must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not contain credentials"));
    }
    if url.fragment().is_some() {
        return Err(FieldError::new(field, "must not contain a #fragment"));
    }
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_https_unless_allowed() {
        let strict = UrlRules { allow_http: false };
        let dev = UrlRules { allow_http: true };
        assert!(webhook_url(
            "webhook_url",
            "https://myserver.com/send/webhook/here",
            strict
        )
        .is_ok());
        let err = webhook_url("webhook_url", "http://myserver.com/hook", strict).unwrap_err();
        assert_eq!(err.field, "webhook_url");
        assert!(err.reason.contains("https://"));
        assert!(webhook_url("webhook_url", "http://myserver.com/hook", dev).is_ok());
        assert!(webhook_url("webhook_url", "ftp://myserver.com/", dev).is_err());
        assert!(webhook_url("webhook_url", "not a url", dev).is_err());
        assert!(webhook_url("webhook_url", "https://user:pw@myserver.com/", strict).is_err());
    }

    #[test]
    fn webhook_urls_are_stored_normalised_and_ambiguous_ones_refused() {
        let rules = UrlRules::default();
        let url = |v: &str| webhook_url("webhook_url", v, rules);
        assert_eq!(
            url("HTTPS://MyServer.COM:443/send/../hook?x=1").unwrap(),
            "https://myserver.com/hook?x=1"
        );
        assert_eq!(
            url("https://myserver.com").unwrap(),
            "https://myserver.com/"
        );
        for bad in [
            " https://myserver.com/hook",
            "https://myserver.com/hook ",
            "https://myserver.com\\hook",
            "https://myserver.com/ho\tok",
            "https://my server.com/",
        ] {
            let err = url(bad).unwrap_err();
            assert_eq!(err.field, "webhook_url", "{bad:?}");
        }
    }

    #[test]
    fn emails_phones_languages_and_colours() {
        assert!(email("e", "contact1@weseedo.nl").is_ok());
        for bad in ["", "a", "a@b", "@b.nl", "a b@c.nl", "a@b@c.nl", "a@.nl"] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
        assert!(phone("p", "+31612345678").is_ok());
        assert!(phone("p", "+31 6-1234").is_ok());
        assert!(phone("p", "call me").is_err());
        assert!(language("l", "nl").is_ok());
        assert!(language("l", "en-GB").is_ok());
        assert!(language("l", "Dutch").is_err());
    }

    #[test]
    fn colours() {
        assert!(colour("c", "#000000").is_ok());
        assert!(colour("c", "#fff").is_ok());
        assert!(colour("c", "000000").is_err());
        assert!(colour("c", "#00000g").is_err());
    }
}
