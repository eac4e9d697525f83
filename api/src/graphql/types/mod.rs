//! The GraphQL object types: templates, steps, runs and schedules, which
//! reference one another (`objects`); people and drives (`people`) and
//! approvals (`approvals`), which reference none of those; their enums,
//! pages and statistics; and the table that makes each plain field's
//! resolver and its direct writer from one line (`plain`).

mod approvals;
mod enums;
mod load;
mod objects;
mod page;
mod people;
pub(crate) mod plain;
mod stats;

pub use approvals::*;
pub use enums::*;
pub(crate) use load::*;
pub use objects::*;
pub use page::*;
pub use people::*;
pub use stats::*;
