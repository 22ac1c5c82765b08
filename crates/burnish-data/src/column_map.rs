//! Column mapping: which column of a file stands for each TRL column.
//!
//! A mapping reads "TRL name <- file column": `prompt <- question` reads the file's `question`
//! as `prompt`, so a file whose columns differ from TRL's names is read as it is, never
//! rewritten. The mapped view of a file is its own columns, except that every mapped TRL name
//! holds the file column it is mapped to (a file column that already has that name is hidden by
//! the mapping). One file column may stand for several TRL names. A mapped column the file lacks
//! is one error naming both names and listing the file's columns.

use std::path::Path;

use serde_json::Value;

use crate::error::{DataError, Result};

/// TRL name -> file column, one entry per TRL name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnMap {
    pairs: Vec<(String, String)>,
}

impl ColumnMap {
    /// A mapping from `(TRL name, file column)` pairs; a TRL name given twice keeps the last.
    pub(crate) fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut map = ColumnMap::default();
        for (trl, file) in pairs {
            map.pairs.retain(|(t, _)| *t != trl);
            map.pairs.push((trl, file));
        }
        map
    }

    /// True when nothing is mapped.
    pub(crate) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Checks that every mapped column is among `columns`, the file's own.
    pub(crate) fn check(&self, path: &Path, columns: &[String]) -> Result<()> {
        for (trl, file) in &self.pairs {
            if !columns.iter().any(|c| c == file) {
                return Err(DataError::MappedColumn {
                    path: path.to_owned(),
                    column: trl.clone(),
                    file_column: file.clone(),
                    found: columns.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The mapped view of a file with `columns`: each visible name with the index of the file
    /// column that holds it.
    pub(crate) fn view(&self, path: &Path, columns: &[String]) -> Result<Vec<(String, usize)>> {
        self.check(path, columns)?;
        let mut view: Vec<(String, usize)> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !self.pairs.iter().any(|(t, _)| t == *c))
            .map(|(i, c)| (c.clone(), i))
            .collect();
        for (trl, file) in &self.pairs {
            if let Some(i) = columns.iter().position(|c| c == file) {
                view.push((trl.clone(), i));
            }
        }
        Ok(view)
    }

    /// Applies the mapping to one JSON record: each mapped TRL key takes the value of its file
    /// key, or disappears when the record has no such key. Values are read before any is
    /// written, so swaps (`chosen <- rejected`, `rejected <- chosen`) work.
    pub(crate) fn apply(&self, record: &mut Value) {
        let Value::Object(obj) = record else {
            return;
        };
        let values: Vec<Option<Value>> = self
            .pairs
            .iter()
            .map(|(_, file)| obj.get(file).cloned())
            .collect();
        for ((trl, _), value) in self.pairs.iter().zip(values) {
            match value {
                Some(v) => {
                    obj.insert(trl.clone(), v);
                }
                None => {
                    obj.remove(trl);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> ColumnMap {
        ColumnMap::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn the_view_hides_the_file_column_a_mapping_replaces() {
        let cols: Vec<String> = ["prompt", "question", "answer"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let view = map(&[("prompt", "question"), ("chosen", "answer")])
            .view(Path::new("f"), &cols)
            .unwrap();
        assert_eq!(
            view,
            vec![
                ("question".to_string(), 1),
                ("answer".to_string(), 2),
                ("prompt".to_string(), 1),
                ("chosen".to_string(), 2)
            ]
        );
        let err = map(&[("rejected", "response_k")])
            .view(Path::new("f.csv"), &cols)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.csv: column `response_k` (mapped to `rejected`) is not in the file (found: prompt, question, answer)"
        );
    }

    #[test]
    fn records_swap_and_lose_unmapped_keys() {
        let mut r = serde_json::json!({"chosen": "a", "rejected": "b", "q": "x"});
        map(&[
            ("chosen", "rejected"),
            ("rejected", "chosen"),
            ("prompt", "q"),
        ])
        .apply(&mut r);
        assert_eq!(
            r,
            serde_json::json!({"chosen": "b", "rejected": "a", "q": "x", "prompt": "x"})
        );
        let mut r = serde_json::json!({"prompt": "old"});
        map(&[("prompt", "question")]).apply(&mut r);
        assert_eq!(r, serde_json::json!({}));
        assert_eq!(map(&[("a", "x"), ("a", "y")]).pairs.len(), 1);
    }
}
