//! The line of every value in a configuration file, by the path the reader
//! names problems with (`virtualServers[0].seeds[1]`), so that `config
//! check` says where to look as well as what is wrong.
//!
//! A second, span-keeping parse of text that has already parsed: the reader
//! walks a plain value, and the parser gives locations only through
//! `Spanned`.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::reader::join;

/// The file's values, each with where it is.
enum Tree {
    Map(Vec<(String, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Leaf,
}

/// Line (from 1) of each path below the top level. Empty if the text does
/// not parse: the lines are a help to the reader, never a reason to refuse.
pub(super) fn of(text: &str) -> HashMap<String, u64> {
    let mut lines = HashMap::new();
    if let Ok(tree) = serde_saphyr::from_str::<Tree>(text) {
        walk(&tree, "", &mut lines);
    }
    lines
}

fn walk(tree: &Tree, path: &str, lines: &mut HashMap<String, u64>) {
    match tree {
        Tree::Map(entries) => {
            for (key, value) in entries {
                let here = join(path, key);
                lines.insert(here.clone(), value.referenced.line());
                walk(&value.value, &here, lines);
            }
        }
        Tree::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let here = format!("{path}[{i}]");
                lines.insert(here.clone(), item.referenced.line());
                walk(&item.value, &here, lines);
            }
        }
        Tree::Leaf => {}
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        // Keys as the reader sees them: a plain value turned into its text.
        while let Some(key) = map.next_key::<serde_json::Value>()? {
            let key = match key {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            entries.push((key, map.next_value::<Spanned<Tree>>()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_the_reader_names_has_its_line() {
        let text = "\
# a comment
interface: apiproxy0
virtualServers:
  - vip: 10.0.0.1:6443
    seeds:
      - 192.168.1.10:6443
      - master-2:6443
health: {interval: 5s}
";
        let lines = of(text);
        assert_eq!(lines.get("interface"), Some(&2));
        assert_eq!(lines.get("virtualServers[0].vip"), Some(&4));
        assert_eq!(lines.get("virtualServers[0].seeds[1]"), Some(&7));
        assert_eq!(lines.get("health.interval"), Some(&8));
        assert!(of("a: [").is_empty());
    }
}
