//! The one credential redactor. Every log line, error, metric string and
//! admin response goes through [`scrub`] (the JS layer calls it through the
//! binding), so the rules live here only.
//!
//! Rules, in order:
//! 1. `user:password` of a configured URI, in its raw and percent-decoded
//!    forms, becomes `***:***` whatever the password's length.
//! 2. The userinfo of anything shaped like `scheme://userinfo@host` becomes
//!    `***:***` (also catches URIs we were not told about).
//! 3. A configured password (raw or decoded) of [`FREE_STANDING_MIN`] or more
//!    characters is masked wherever it appears; a shorter one only in the
//!    forms above, since masking every `a` or `x1` would garble the text.
//!    A configured user of that length followed by `:` is masked too.

/// Shortest password masked outside a `user:password` / URI context.
pub const FREE_STANDING_MIN: usize = 4;

const MASK: &str = "***";

/// Hides the password (and user) of a MongoDB URI, for logs and errors.
pub fn redact_uri(uri: &str) -> String {
    mask_userinfo(uri)
}

/// Removes the credentials of `uris` (and any URI-looking userinfo) from `text`.
pub fn scrub(text: &str, uris: &[&str]) -> String {
    let creds: Vec<(String, String)> = uris.iter().filter_map(|u| credentials(u)).collect();
    let mut out = text.to_owned();
    for (user, pass) in &creds {
        for (u, p) in forms(user, pass) {
            if !p.is_empty() {
                out = out.replace(&format!("{u}:{p}@"), "***:***@");
                out = out.replace(&format!("{u}:{p}"), "***:***");
            }
        }
    }
    out = mask_userinfo(&out);
    for (user, pass) in &creds {
        for (u, p) in forms(user, pass) {
            if p.chars().count() >= FREE_STANDING_MIN {
                out = out.replace(&p, MASK);
            }
            if u.chars().count() >= FREE_STANDING_MIN {
                out = out.replace(&format!("{u}:"), "***:");
            }
        }
    }
    out
}

/// The raw and the percent-decoded spelling of a user/password pair.
fn forms(user: &str, pass: &str) -> Vec<(String, String)> {
    let raw = (user.to_owned(), pass.to_owned());
    let decoded = (percent_decode(user), percent_decode(pass));
    if decoded == raw {
        vec![raw]
    } else {
        vec![raw, decoded]
    }
}

/// `scheme://userinfo@rest` → `scheme://***:***@rest` for every URI in `text`.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '/' | '?' | '#' | '"' | '\'' | ',' | ')' | ']' | '>')
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***:***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The (user, password) of a URI's userinfo, as written (percent-encoded).
fn credentials(uri: &str) -> Option<(String, String)> {
    let rest = &uri[uri.find("://")? + 3..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..host_end].rfind('@')?;
    let userinfo = &rest[..at];
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((user.to_owned(), pass.to_owned()))
}

/// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 stay as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_uris() {
        assert_eq!(
            redact_uri("mongodb+srv://bomba:s3cret@cluster0.x.mongodb.net/bomba?w=majority"),
            "mongodb+srv://***:***@cluster0.x.mongodb.net/bomba?w=majority"
        );
        assert_eq!(
            redact_uri("mongodb://localhost:27017/a"),
            "mongodb://localhost:27017/a"
        );
    }

    #[test]
    fn masks_raw_and_decoded_passwords() {
        let uri = "mongodb://u1:p%40ssw0rd@h:1/db";
        let msg = format!("failed to connect to {uri}: auth p%40ssw0rd / p@ssw0rd rejected");
        let clean = scrub(&msg, &[uri]);
        assert!(!clean.contains("p%40ssw0rd"), "{clean}");
        assert!(!clean.contains("p@ssw0rd"), "{clean}");
        assert!(clean.contains("mongodb://***:***@h:1/db"), "{clean}");
    }

    #[test]
    fn short_passwords_are_masked_without_garbling() {
        let uri = "mongodb://al:a@h:1/db";
        let msg = format!("cannot reach {uri} as al:a after a retry");
        let clean = scrub(&msg, &[uri]);
        assert_eq!(
            clean,
            "cannot reach mongodb://***:***@h:1/db as ***:*** after a retry"
        );
        // A two-character, percent-encoded password: both forms, in context.
        let uri = "mongodb://bob:%25x@h/db";
        let clean = scrub("bob:%x and bob:%25x", &[uri]);
        assert_eq!(clean, "***:*** and ***:***");
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        let msg = "server selection timeout, a = 1";
        assert_eq!(scrub(msg, &["mongodb://u:a@h/db", "mongodb://h/db"]), msg);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "%ff"); // not UTF-8: left as written
    }
}
