//! Scope and extras policy: which documents of a collection this installation
//! owns, and what a reconcile does with owned documents that exist only on
//! Atlas. Several installations (cafés, a cloud app) can share one Atlas
//! database; each one reads, compares, counts and writes only its own scope.
//!
//! Scope filters are evaluated by the servers, never here: the scan and the
//! re-read send them as query filters, and every Atlas write carries
//! `{_id, ...scope}` as its `q`, so a write can only ever touch an owned
//! document (the check and the write are one atomic server operation).

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Key of the rule that applies to collections without their own.
pub const DEFAULT_KEY: &str = "*";

/// What a reconcile does with an in-scope document that Atlas has and local
/// does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtrasPolicy {
    /// List it (verify report, log, metrics), never touch it.
    Report,
    /// Atlas mirrors local: delete it.
    Delete,
}

impl ExtrasPolicy {
    pub fn parse(s: &str) -> Option<ExtrasPolicy> {
        match s {
            "report" => Some(ExtrasPolicy::Report),
            "delete" => Some(ExtrasPolicy::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExtrasPolicy::Report => "report",
            ExtrasPolicy::Delete => "delete",
        }
    }
}

/// Scope and extras policy of one collection (or of `*`).
#[derive(Clone, Debug)]
pub struct ScopeRule {
    /// `None` (or an empty filter, normalised to `None`) = every document.
    pub filter: Option<RawDocumentBuf>,
    pub extras_policy: ExtrasPolicy,
}

/// Every collection's rule; collections without one use `*`.
#[derive(Debug)]
pub struct ScopeRules {
    default: ScopeRule,
    per_collection: HashMap<String, ScopeRule>,
    /// Extras listed and left in place, since start.
    pub extras_reported: AtomicU64,
    /// Extras queued for deletion, since start.
    pub extras_deleted: AtomicU64,
}

impl Default for ScopeRules {
    /// No scope, extras reported: safe for a shared Atlas database.
    fn default() -> Self {
        ScopeRules {
            default: ScopeRule {
                filter: None,
                extras_policy: ExtrasPolicy::Report,
            },
            per_collection: HashMap::new(),
            extras_reported: AtomicU64::new(0),
            extras_deleted: AtomicU64::new(0),
        }
    }
}

impl ScopeRules {
    /// Checks each filter (an `_id` condition would clash with the `_id`
    /// every point read and write adds) and normalises empty filters.
    pub fn new(
        default: ScopeRule,
        per_collection: HashMap<String, ScopeRule>,
    ) -> Result<ScopeRules, String> {
        let check = |name: &str, mut rule: ScopeRule| -> Result<ScopeRule, String> {
            if let Some(f) = &rule.filter {
                for entry in f.iter() {
                    let (key, _) = entry.map_err(|e| {
                        format!("scope of {name:?} is not a readable BSON document: {e}")
                    })?;
                    if key == "_id" {
                        return Err(format!(
                            "scope of {name:?} filters on _id: expected a filter on other fields (e.g. {{\"organization\": ...}})"
                        ));
                    }
                }
                if f.is_empty() {
                    rule.filter = None;
                }
            }
            Ok(rule)
        };
        let default = check(DEFAULT_KEY, default)?;
        let mut map = HashMap::with_capacity(per_collection.len());
        for (name, rule) in per_collection {
            let rule = check(&name, rule)?;
            map.insert(name, rule);
        }
        Ok(ScopeRules {
            default,
            per_collection: map,
            extras_reported: AtomicU64::new(0),
            extras_deleted: AtomicU64::new(0),
        })
    }

    pub fn rule(&self, coll: &str) -> &ScopeRule {
        self.per_collection.get(coll).unwrap_or(&self.default)
    }

    pub fn filter(&self, coll: &str) -> Option<&RawDocumentBuf> {
        self.rule(coll).filter.as_ref()
    }

    pub fn extras_policy(&self, coll: &str) -> ExtrasPolicy {
        self.rule(coll).extras_policy
    }

    /// Whether any collection has a scope (for the log line at start).
    pub fn any_scope(&self) -> bool {
        self.default.filter.is_some() || self.per_collection.values().any(|r| r.filter.is_some())
    }

    /// Counts one reconcile's extras under the collection's policy.
    pub fn count_extras(&self, coll: &str, n: u64) {
        match self.extras_policy(coll) {
            ExtrasPolicy::Report => self.extras_reported.fetch_add(n, Relaxed),
            ExtrasPolicy::Delete => self.extras_deleted.fetch_add(n, Relaxed),
        };
    }

    /// `{ rules: {coll|*: {scope, extrasPolicy}}, extrasReported, extrasDeleted }`
    /// for metrics and the HTTP API (scope as relaxed Extended JSON).
    pub fn snapshot(&self) -> Value {
        let mut rules = serde_json::Map::new();
        rules.insert(DEFAULT_KEY.into(), rule_json(&self.default));
        let mut names: Vec<&String> = self.per_collection.keys().collect();
        names.sort();
        for name in names {
            rules.insert(name.clone(), rule_json(&self.per_collection[name]));
        }
        json!({
            "rules": rules,
            "extrasReported": self.extras_reported.load(Relaxed),
            "extrasDeleted": self.extras_deleted.load(Relaxed),
        })
    }
}

fn rule_json(rule: &ScopeRule) -> Value {
    json!({
        "scope": rule.filter.as_ref().map(|f| filter_json(f)),
        "extrasPolicy": rule.extras_policy.as_str(),
    })
}

/// A filter as relaxed Extended JSON (`{"organization": {"$oid": "..."}}`).
pub fn filter_json(filter: &RawDocument) -> Value {
    match bson::Document::try_from(filter) {
        Ok(d) => bson::Bson::Document(d).into_relaxed_extjson(),
        Err(_) => Value::Null,
    }
}

/// `{_id: <id>, ...scope}`: the filter of every point read and Atlas write,
/// so the server itself checks ownership in the same operation. `id` is an
/// identity document `{_id: v}`; without a scope the result is `{_id: v}`.
pub fn scoped_id(id: &RawDocument, scope: Option<&RawDocumentBuf>) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    if let Ok(Some(v)) = id.get("_id") {
        out.append_ref("_id", v);
    }
    append_scope(&mut out, scope);
    out
}

/// `{_id: <value>, ...scope}` from a bare `_id` value.
pub fn scoped_value(id: RawBsonRef<'_>, scope: Option<&RawDocumentBuf>) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    out.append_ref("_id", id);
    append_scope(&mut out, scope);
    out
}

/// Adds the scope's conditions to a filter that has only `_id` conditions.
pub fn append_scope(filter: &mut RawDocumentBuf, scope: Option<&RawDocumentBuf>) {
    if let Some(scope) = scope {
        for (key, value) in scope.iter().flatten() {
            filter.append_ref(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{oid::ObjectId, rawdoc};

    fn rule(filter: Option<RawDocumentBuf>, p: ExtrasPolicy) -> ScopeRule {
        ScopeRule {
            filter,
            extras_policy: p,
        }
    }

    #[test]
    fn collections_fall_back_to_the_default_rule() {
        let org = ObjectId::new();
        let mut per = HashMap::new();
        per.insert(
            "sessions".to_owned(),
            rule(Some(rawdoc! {}), ExtrasPolicy::Delete),
        );
        let rules = ScopeRules::new(
            rule(Some(rawdoc! { "organization": org }), ExtrasPolicy::Report),
            per,
        )
        .unwrap();
        assert_eq!(
            rules.filter("bills"),
            Some(&rawdoc! { "organization": org })
        );
        assert_eq!(rules.extras_policy("bills"), ExtrasPolicy::Report);
        // An empty filter means "everything", the same as none.
        assert_eq!(rules.filter("sessions"), None);
        assert_eq!(rules.extras_policy("sessions"), ExtrasPolicy::Delete);
        let snap = rules.snapshot();
        assert_eq!(
            snap["rules"]["*"]["scope"]["organization"]["$oid"],
            org.to_hex()
        );
        assert_eq!(snap["rules"]["sessions"]["scope"], Value::Null);
        assert_eq!(snap["rules"]["sessions"]["extrasPolicy"], "delete");
    }

    #[test]
    fn a_scope_on_id_is_refused() {
        let err = ScopeRules::new(
            rule(Some(rawdoc! { "_id": 1 }), ExtrasPolicy::Report),
            HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("filters on _id"), "{err}");
    }

    #[test]
    fn point_filters_carry_the_scope() {
        let scope = rawdoc! { "organization": "A", "deleted": { "$ne": true } };
        let id = rawdoc! { "_id": 7 };
        assert_eq!(
            scoped_id(&id, Some(&scope)),
            rawdoc! { "_id": 7, "organization": "A", "deleted": { "$ne": true } }
        );
        assert_eq!(scoped_id(&id, None), rawdoc! { "_id": 7 });
        assert_eq!(
            scoped_value(RawBsonRef::String("x"), Some(&scope)),
            rawdoc! { "_id": "x", "organization": "A", "deleted": { "$ne": true } }
        );
    }

    #[test]
    fn extras_are_counted_under_their_policy() {
        let mut per = HashMap::new();
        per.insert("logs".to_owned(), rule(None, ExtrasPolicy::Delete));
        let rules = ScopeRules::new(rule(None, ExtrasPolicy::Report), per).unwrap();
        rules.count_extras("bills", 3);
        rules.count_extras("logs", 2);
        assert_eq!(rules.extras_reported.load(Relaxed), 3);
        assert_eq!(rules.extras_deleted.load(Relaxed), 2);
    }
}
