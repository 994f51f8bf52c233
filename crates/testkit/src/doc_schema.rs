//! Keeps a documented JSON format and the code that writes it equal: every
//! field of a sample document must be named in the doc's table, and the
//! table must name no field the document lacks.
//!
//! The table is a Markdown table whose first cell names fields in
//! backticks (`a`, `a[].b` for lists of objects; one row may name several).
//! An object described in one row may name its keys in that row's text
//! instead of rows of their own.

use std::collections::BTreeSet;

use serde_json::Value;

/// Checks `sample` against the table in the part of `doc` that follows
/// `heading` (up to the next heading of any level). The error names the
/// undocumented and the stale fields.
pub fn check(doc: &str, heading: &str, sample: &Value) -> Result<(), String> {
    let section = doc
        .split(heading)
        .nth(1)
        .map(|s| s.split("\n#").next().unwrap_or(s))
        .ok_or_else(|| format!("the doc has no section {heading:?}"))?;
    let mut documented = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for (i, part) in first_cell.split('`').enumerate() {
            if i % 2 == 1 {
                documented.insert(part.to_string());
            }
        }
    }
    let mut fields = BTreeSet::new();
    paths(sample, "", &mut fields);
    let covered = |f: &String| {
        documented.contains(f)
            || documented.iter().any(|d| {
                f.strip_prefix(&format!("{d}."))
                    .is_some_and(|rest| section.contains(&format!("`{rest}`")))
            })
    };
    let missing: Vec<&String> = fields.iter().filter(|f| !covered(f)).collect();
    let stale: Vec<&String> = documented.iter().filter(|d| !fields.contains(*d)).collect();
    if missing.is_empty() && stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "undocumented: {missing:?}; documented but absent from the sample: {stale:?}"
        ))
    }
}

/// `a.b`, and `a[].b` for lists of objects.
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_object()) {
                paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# T\n\n## Format\n\n| field | meaning |\n| --- | --- |\n| `a` | x |\n| `b`, `c` | y |\n| `list` | l |\n| `list[].x` | z |\n| `obj` | has `k` |\n\n## Next\n| `zzz` | not this section |\n";

    #[test]
    fn a_sample_matches_or_is_named_wrong() {
        let ok = serde_json::json!({"a": 1, "b": 2, "c": 3, "list": [{"x": 1}], "obj": {"k": 1}});
        check(DOC, "## Format", &ok).expect("matches");
        let extra = serde_json::json!({"a": 1, "b": 2, "c": 3, "list": [{"x": 1, "y": 2}], "obj": {"k": 1}});
        let e = check(DOC, "## Format", &extra).expect_err("list[].y");
        assert!(e.contains("list[].y"), "{e}");
        let short = serde_json::json!({"a": 1, "b": 2, "list": [], "obj": {"k": 1}});
        let e = check(DOC, "## Format", &short).expect_err("c, list[].x");
        assert!(e.contains("\"c\"") && e.contains("list[].x"), "{e}");
    }
}
