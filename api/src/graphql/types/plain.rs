//! One table for each type's plain fields (a column of its row, no loader):
//! `plain_object!` makes from it both the field's resolver and its arm in the
//! direct writer (`render::Plain`), so a plain field cannot be added to one
//! and forgotten in the other, and both name it alike.
//!
//! ```ignore
//! plain_object! {
//!     #[Object]
//!     User(row) {
//!         plain "id" id: id(row.id),
//!         plain "name" name: opt_str(row.name),
//!         resolvers {
//!             async fn drives(&self, ctx: &Context<'_>) -> Result<Vec<Drive>> { … }
//!         }
//!     }
//! }
//! ```
//!
//! Each kind fixes the resolver's return type and how the writer writes it:
//! `id`, `opt_id`, `str`, `opt_str`, `int`, `opt_int`, `boolean`, `time`,
//! `opt_time` (a UTC `DateTime`), `json`, `opt_json` (stored JSON as it is),
//! `strings` (a list of strings), `exec_status`, `step_status`. Fields are
//! declared in schema order; `resolvers { … }` holds the other fields as
//! ordinary resolvers, in place. The `#[Object]` attribute is written at the
//! table, not in the macro, so that expressions async-graphql reads from
//! strings (`complexity = "…"`) resolve where they are written.

use std::io::Write;

use chrono::NaiveDateTime;

use crate::graphql::json::write_str;

macro_rules! plain_object {
    ($pound:tt $object:tt $ty:ident($row:ident) { $($body:tt)* }) => {
        $crate::graphql::types::plain::plain_object!(@munch ($pound $object) $ty $row [] [] $($body)*);
    };

    // The table is read: the object and its writer.
    (@munch ($($object:tt)*) $ty:ident $row:ident [$($res:tt)*] [$( ($gql:literal $kind:ident ($($val:tt)*)) )*]) => {
        $($object)*
        impl $ty {
            $($res)*
        }

        impl $crate::graphql::render::Plain for $ty {
            fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
                let $row = &self.0;
                match name {
                    $( $gql => $crate::graphql::types::plain::plain_object!(@write $kind out ($($val)*)), )*
                    _ => return false,
                }
                true
            }
        }
    };

    // A plain field.
    (@munch ($($object:tt)*) $ty:ident $row:ident [$($res:tt)*] [$($arm:tt)*]
        $(#[$doc:meta])* plain $gql:literal $field:ident : $kind:ident ($($val:tt)*), $($rest:tt)*) => {
        $crate::graphql::types::plain::plain_object!(@field $kind ($($object)*) $ty $row [$($res)*] [$($arm)*]
            ($(#[$doc])*) $gql $field ($($val)*) $($rest)*);
    };

    // Other fields, as they are.
    (@munch ($($object:tt)*) $ty:ident $row:ident [$($res:tt)*] [$($arm:tt)*] resolvers { $($items:tt)* } $($rest:tt)*) => {
        $crate::graphql::types::plain::plain_object!(@munch ($($object)*) $ty $row [$($res)* $($items)*] [$($arm)*] $($rest)*);
    };

    // Each kind: the resolver's return type and value.
    (@field id $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (async_graphql::ID) id $($t)*); };
    (@field opt_id $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (Option<async_graphql::ID>) opt_id $($t)*); };
    (@field str $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (&str) str $($t)*); };
    (@field opt_str $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (Option<&str>) opt_str $($t)*); };
    (@field int $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (i32) int $($t)*); };
    (@field opt_int $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (Option<i32>) opt_int $($t)*); };
    (@field boolean $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (bool) boolean $($t)*); };
    (@field time $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (chrono::DateTime<chrono::Utc>) time $($t)*); };
    (@field opt_time $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (Option<chrono::DateTime<chrono::Utc>>) opt_time $($t)*); };
    (@field json $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver ($crate::graphql::json::StoredJson<'_>) json $($t)*); };
    (@field opt_json $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (Option<$crate::graphql::json::StoredJson<'_>>) opt_json $($t)*); };
    (@field strings $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver (&[String]) strings $($t)*); };
    (@field exec_status $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver ($crate::graphql::types::ExecutionStatusGql) exec_status $($t)*); };
    (@field step_status $($t:tt)*) => { $crate::graphql::types::plain::plain_object!(@resolver ($crate::graphql::types::StepStatusGql) step_status $($t)*); };

    (@resolver ($ret:ty) $kind:ident ($($object:tt)*) $ty:ident $row:ident [$($res:tt)*] [$($arm:tt)*]
        ($($doc:tt)*) $gql:literal $field:ident ($($val:tt)*) $($rest:tt)*) => {
        $crate::graphql::types::plain::plain_object!(@munch ($($object)*) $ty $row
            [$($res)*
                $($doc)*
                #[graphql(name = $gql)]
                async fn $field(&self) -> $ret {
                    let $row = &self.0;
                    $crate::graphql::types::plain::plain_object!(@get $kind ($($val)*))
                }
            ]
            [$($arm)* ($gql $kind ($($val)*))]
            $($rest)*);
    };

    // What the resolver returns for each kind.
    (@get id ($($v:tt)*)) => { async_graphql::ID($($v)*.clone()) };
    (@get opt_id ($($v:tt)*)) => { $($v)*.clone().map(async_graphql::ID) };
    (@get str ($($v:tt)*)) => { &$($v)* };
    (@get opt_str ($($v:tt)*)) => { $($v)*.as_deref() };
    (@get int ($($v:tt)*)) => { $($v)* };
    (@get opt_int ($($v:tt)*)) => { $($v)* };
    (@get boolean ($($v:tt)*)) => { $($v)* };
    (@get time ($($v:tt)*)) => { $($v)*.and_utc() };
    (@get opt_time ($($v:tt)*)) => { $($v)*.map(|t| t.and_utc()) };
    (@get json ($($v:tt)*)) => { $crate::graphql::json::StoredJson(&$($v)*) };
    (@get opt_json ($($v:tt)*)) => { $($v)*.as_ref().map($crate::graphql::json::StoredJson) };
    (@get strings ($($v:tt)*)) => { &$($v)* };
    (@get exec_status ($($v:tt)*)) => { $crate::graphql::types::ExecutionStatusGql::from($($v)*) };
    (@get step_status ($($v:tt)*)) => { $crate::graphql::types::StepStatusGql::from($($v)*) };

    // How the writer writes each kind.
    (@write id $out:ident ($($v:tt)*)) => { $crate::graphql::json::write_str(&$($v)*, $out) };
    (@write opt_id $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::str_or_null($($v)*.as_deref(), $out) };
    (@write str $out:ident ($($v:tt)*)) => { $crate::graphql::json::write_str(&$($v)*, $out) };
    (@write opt_str $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::str_or_null($($v)*.as_deref(), $out) };
    (@write int $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::int($($v)*, $out) };
    (@write opt_int $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::int_or_null($($v)*, $out) };
    (@write boolean $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::boolean($($v)*, $out) };
    (@write time $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::time($($v)*, $out) };
    (@write opt_time $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::time_or_null($($v)*, $out) };
    (@write json $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::json(&$($v)*, $out) };
    (@write opt_json $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::json_or_null($($v)*.as_ref(), $out) };
    (@write strings $out:ident ($($v:tt)*)) => { $crate::graphql::types::plain::strings(&$($v)*, $out) };
    (@write exec_status $out:ident ($($v:tt)*)) => {
        $crate::graphql::json::write_value(
            &async_graphql::resolver_utils::enum_value($crate::graphql::types::ExecutionStatusGql::from($($v)*)),
            $out,
        )
    };
    (@write step_status $out:ident ($($v:tt)*)) => {
        $crate::graphql::json::write_value(
            &async_graphql::resolver_utils::enum_value($crate::graphql::types::StepStatusGql::from($($v)*)),
            $out,
        )
    };
}

pub(crate) use plain_object;

pub(crate) fn str_or_null(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => write_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn int(n: i32, out: &mut Vec<u8>) {
    write!(out, "{n}").expect("writing to a Vec");
}

pub(crate) fn int_or_null(n: Option<i32>, out: &mut Vec<u8>) {
    match n {
        Some(n) => int(n, out),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn boolean(b: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

pub(crate) fn time(t: NaiveDateTime, out: &mut Vec<u8>) {
    write_str(&t.and_utc().to_rfc3339(), out);
}

pub(crate) fn time_or_null(t: Option<NaiveDateTime>, out: &mut Vec<u8>) {
    match t {
        Some(t) => time(t, out),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn json(v: &serde_json::Value, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, v).expect("a JSON value serializes");
}

pub(crate) fn json_or_null(v: Option<&serde_json::Value>, out: &mut Vec<u8>) {
    match v {
        Some(v) => json(v, out),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn strings(list: &[String], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(s, out);
    }
    out.push(b']');
}
