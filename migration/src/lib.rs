//! Schema migrations, one file per change. They run at server start and with
//! `workflows migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_tables;
mod m20261129_000002_execution_runtime;
mod m20261129_000003_leases;
mod m20261201_000004_lz4_json;
mod m20261202_000005_initial_context;
mod m20261202_000006_schedules;
mod m20261202_000007_template_search;
mod m20261202_000008_versions_retries;
mod m20261202_000009_template_stats;
mod m20261202_000010_parallel_approvals;
mod m20261208_000011_hourly_stats;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_tables::Migration),
            Box::new(m20261129_000002_execution_runtime::Migration),
            Box::new(m20261129_000003_leases::Migration),
            Box::new(m20261201_000004_lz4_json::Migration),
            Box::new(m20261202_000005_initial_context::Migration),
            Box::new(m20261202_000006_schedules::Migration),
            Box::new(m20261202_000007_template_search::Migration),
            Box::new(m20261202_000008_versions_retries::Migration),
            Box::new(m20261202_000009_template_stats::Migration),
            Box::new(m20261202_000010_parallel_approvals::Migration),
            Box::new(m20261208_000011_hourly_stats::Migration),
        ]
    }
}
