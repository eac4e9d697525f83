//! SeaORM entities: the tables of docs/domain.md ("Database tables") and the drive tables
//! its foreign keys need. No business logic lives here.

pub mod drive;
pub mod drive_member;
pub mod sea_orm_active_enums;
pub mod tags;
pub mod user;
pub mod workflow_execution;
pub mod workflow_execution_approval;
pub mod workflow_execution_stat;
pub mod workflow_execution_step;
pub mod workflow_schedule;
pub mod workflow_step;
pub mod workflow_template;
pub mod workflow_template_stat;
pub mod workflow_template_version;

pub use sea_orm_active_enums::{DriveRole, ExecutionStatus, StepStatus};
pub use tags::Tags;
