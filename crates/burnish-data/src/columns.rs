//! Arrow encodings of the row fields, both ways.
//!
//! Text is `Utf8`; a message list is `List<Struct<role: Utf8, content: Utf8>>`, as the Hugging
//! Face `datasets` library writes it. Reading is lenient where pyarrow and TRL differ from us
//! (`LargeUtf8`, `Utf8View`, `LargeList`, integer ids, float64 margins are cast), strict on
//! shape: a null or a wrong type is a per-row error naming the column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int64Array, ListArray,
    StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};

use crate::row::{Content, Message};

/// The struct type of one message.
pub fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

/// The Arrow type of a prompt or completion column: `Utf8`, or a list of message structs.
pub fn content_type(messages: bool) -> DataType {
    if messages {
        DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(message_fields()),
            false,
        )))
    } else {
        DataType::Utf8
    }
}

/// The Arrow type of a `responses` column: a list of [`content_type`].
pub fn content_list_type(messages: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", content_type(messages), false)))
}

fn messages_array<'a>(rows: impl Iterator<Item = &'a [Message]>) -> ArrayRef {
    let mut lengths = Vec::new();
    let mut roles = Vec::new();
    let mut contents = Vec::new();
    for msgs in rows {
        lengths.push(msgs.len());
        for m in msgs {
            roles.push(m.role.as_str());
            contents.push(m.content.as_str());
        }
    }
    let fields = message_fields();
    let structs = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(StringArray::from(roles)),
            Arc::new(StringArray::from(contents)),
        ],
        None,
    );
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(fields), false)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(structs),
        None,
    ))
}

/// Encodes contents into one column; every value must be of the kind `messages` says.
pub fn content_array(values: &[&Content], messages: bool) -> Result<ArrayRef, String> {
    if messages {
        let mut lists = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Content::Messages(m) => lists.push(m.as_slice()),
                Content::Text(_) => return Err("plain text in a message-list column".into()),
            }
        }
        Ok(messages_array(lists.into_iter()))
    } else {
        let mut texts = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Content::Text(t) => texts.push(t.as_str()),
                Content::Messages(_) => return Err("a message list in a plain-text column".into()),
            }
        }
        Ok(Arc::new(StringArray::from(texts)))
    }
}

/// Encodes lists of contents (the `responses` column of listwise rows).
pub fn content_list_array(values: &[&[Content]], messages: bool) -> Result<ArrayRef, String> {
    let flat: Vec<&Content> = values.iter().flat_map(|v| v.iter()).collect();
    let inner = content_array(&flat, messages)?;
    Ok(Arc::new(ListArray::new(
        Arc::new(Field::new("item", content_type(messages), false)),
        OffsetBuffer::from_lengths(values.iter().map(|v| v.len())),
        inner,
        None,
    )))
}

fn to_utf8(array: &ArrayRef) -> Result<StringArray, String> {
    match array.data_type() {
        DataType::Utf8 => Ok(array.as_string::<i32>().clone()),
        DataType::LargeUtf8 | DataType::Utf8View => {
            let c = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            Ok(c.as_string::<i32>().clone())
        }
        other => Err(format!("has type {other}, expected a string")),
    }
}

/// A decoded prompt/completion column of one record batch.
// One exists per column and batch, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ContentColumn {
    Text(StringArray),
    Messages {
        list: ListArray,
        role: StringArray,
        content: StringArray,
    },
}

impl ContentColumn {
    /// Accepts `Utf8`-like strings or (large) lists of `{role, content}` structs.
    pub(crate) fn new(array: &ArrayRef) -> Result<Self, String> {
        match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(ContentColumn::Text(to_utf8(array)?))
            }
            DataType::List(_) | DataType::LargeList(_) => {
                let list = match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().clone(),
                    DataType::LargeList(f) => {
                        let target = DataType::List(f.clone());
                        cast(array, &target)
                            .map_err(|e| e.to_string())?
                            .as_list::<i32>()
                            .clone()
                    }
                    _ => unreachable!(),
                };
                let values = list.values();
                let Some(structs) = values.as_struct_opt() else {
                    return Err(format!(
                        "has type {}, expected a string or a list of {{role, content}}",
                        array.data_type()
                    ));
                };
                let role = structs
                    .column_by_name("role")
                    .ok_or("message structs have no `role` field")?;
                let content = structs
                    .column_by_name("content")
                    .ok_or("message structs have no `content` field")?;
                Ok(ContentColumn::Messages {
                    role: to_utf8(role).map_err(|e| format!("message `role` {e}"))?,
                    content: to_utf8(content).map_err(|e| format!("message `content` {e}"))?,
                    list,
                })
            }
            other => Err(format!(
                "has type {other}, expected a string or a list of {{role, content}}"
            )),
        }
    }

    pub(crate) fn get(&self, row: usize) -> Result<Content, String> {
        match self {
            ContentColumn::Text(a) => {
                if a.is_null(row) {
                    return Err("is null".into());
                }
                Ok(Content::Text(a.value(row).to_owned()))
            }
            ContentColumn::Messages {
                list,
                role,
                content,
            } => {
                if list.is_null(row) {
                    return Err("is null".into());
                }
                let offsets = list.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let mut out = Vec::with_capacity(end - start);
                for i in start..end {
                    if role.is_null(i) || content.is_null(i) {
                        return Err(format!("message {} has a null role or content", i - start));
                    }
                    out.push(Message::new(role.value(i), content.value(i)));
                }
                Ok(Content::Messages(out))
            }
        }
    }
}

/// A decoded `responses` column: one list of contents per row.
#[derive(Debug)]
pub(crate) struct ContentListColumn {
    list: ListArray,
    inner: ContentColumn,
}

impl ContentListColumn {
    pub(crate) fn new(array: &ArrayRef) -> Result<Self, String> {
        let list = match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().clone(),
            DataType::LargeList(f) => cast(array, &DataType::List(f.clone()))
                .map_err(|e| e.to_string())?
                .as_list::<i32>()
                .clone(),
            other => return Err(format!("has type {other}, expected a list")),
        };
        let inner = ContentColumn::new(list.values()).map_err(|e| format!("items {e}"))?;
        Ok(ContentListColumn { list, inner })
    }

    pub(crate) fn get(&self, row: usize) -> Result<Vec<Content>, String> {
        if self.list.is_null(row) {
            return Err("is null".into());
        }
        let offsets = self.list.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .map(|i| {
                self.inner
                    .get(i)
                    .map_err(|e| format!("item {} {e}", i - offsets[row] as usize))
            })
            .collect()
    }
}

/// An optional float column cast to float32. Text (a CSV column) is parsed strictly: a value
/// that is not a number fails the column rather than becoming a silent null.
pub(crate) fn f32_column(array: &ArrayRef) -> Result<Float32Array, String> {
    let options = arrow::compute::CastOptions {
        safe: !matches!(
            array.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        ..Default::default()
    };
    let c = arrow::compute::cast_with_options(array, &DataType::Float32, &options)
        .map_err(|e| format!("cannot be read as float32: {e}"))?;
    Ok(c.as_primitive().clone())
}

/// A label column: booleans, integers 0/1, or text `true`/`false`/`1`/`0` (CSV).
#[derive(Debug)]
pub(crate) enum LabelColumn {
    Bool(BooleanArray),
    Int(Int64Array),
    Text(StringArray),
}

impl LabelColumn {
    pub(crate) fn new(array: &ArrayRef) -> Result<Self, String> {
        match array.data_type() {
            DataType::Boolean => Ok(LabelColumn::Bool(array.as_boolean().clone())),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(LabelColumn::Text(to_utf8(array)?))
            }
            t if t.is_integer() => {
                let c = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
                Ok(LabelColumn::Int(c.as_primitive().clone()))
            }
            other => Err(format!(
                "has type {other}, expected a boolean (or integers 0/1)"
            )),
        }
    }

    pub(crate) fn get(&self, row: usize) -> Result<bool, String> {
        let is_null = match self {
            LabelColumn::Bool(a) => a.is_null(row),
            LabelColumn::Int(a) => a.is_null(row),
            LabelColumn::Text(a) => a.is_null(row),
        };
        if is_null {
            return Err("is null".into());
        }
        match self {
            LabelColumn::Bool(a) => Ok(a.value(row)),
            LabelColumn::Int(a) => match a.value(row) {
                0 => Ok(false),
                1 => Ok(true),
                n => Err(format!("is {n}, expected a boolean (or 0/1)")),
            },
            LabelColumn::Text(a) => parse_label(a.value(row)),
        }
    }
}

/// `true`/`false` (any case) or `1`/`0`.
fn parse_label(text: &str) -> Result<bool, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("true") || t == "1" {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") || t == "0" {
        Ok(false)
    } else {
        Err(format!("is `{t}`, expected a boolean (true/false or 1/0)"))
    }
}

/// An id column cast to strings (integer ids are accepted).
pub(crate) fn id_column(array: &ArrayRef) -> Result<StringArray, String> {
    let c = cast(array, &DataType::Utf8).map_err(|e| format!("cannot be read as a string: {e}"))?;
    Ok(c.as_string::<i32>().clone())
}

/// A list-of-numbers column (`ranks` or `scores`), cast element-wise.
pub(crate) fn number_list_column(array: &ArrayRef, item: DataType) -> Result<ListArray, String> {
    let target = DataType::List(Arc::new(Field::new("item", item, true)));
    let c =
        cast(array, &target).map_err(|e| format!("cannot be read as a list of numbers: {e}"))?;
    Ok(c.as_list::<i32>().clone())
}

pub(crate) fn list_i64(list: &ListArray, row: usize) -> Result<Vec<i64>, String> {
    if list.is_null(row) {
        return Err("is null".into());
    }
    let v = list.value(row);
    let v: &Int64Array = v.as_primitive();
    if v.null_count() > 0 {
        return Err("holds a null".into());
    }
    Ok(v.values().to_vec())
}

pub(crate) fn list_f32(list: &ListArray, row: usize) -> Result<Vec<f32>, String> {
    if list.is_null(row) {
        return Err("is null".into());
    }
    let v = list.value(row);
    let v: &Float32Array = v.as_primitive();
    if v.null_count() > 0 {
        return Err("holds a null".into());
    }
    Ok(v.values().to_vec())
}

pub(crate) fn list_f64(list: &ListArray, row: usize) -> Result<Vec<f64>, String> {
    if list.is_null(row) {
        return Err("is null".into());
    }
    let v = list.value(row);
    let v: &Float64Array = v.as_primitive();
    if v.null_count() > 0 {
        return Err("holds a null".into());
    }
    Ok(v.values().to_vec())
}
