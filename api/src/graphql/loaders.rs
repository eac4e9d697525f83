//! DataLoaders for every nested field: each batches the keys of one level of
//! the response into a single `IN (…)` query. Made per request, so nothing is
//! cached across viewers.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use entity::{
    drive, drive_member, user, workflow_execution_step as exec_step, workflow_step as step,
    workflow_template as template,
};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain;

pub type LoadError = Arc<DbErr>;

macro_rules! by_id_loader {
    ($name:ident, $model:ty, $find:path) => {
        pub struct $name(pub DatabaseConnection);

        impl Loader<String> for $name {
            type Value = $model;
            type Error = LoadError;

            async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
                let rows = $find(&self.0, keys).await.map_err(Arc::new)?;
                Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
            }
        }
    };
}

by_id_loader!(UserLoader, user::Model, domain::users::find_many);
by_id_loader!(DriveLoader, drive::Model, domain::drives::find_many);
by_id_loader!(TemplateLoader, template::Model, domain::templates::find_many);
by_id_loader!(StepLoader, step::Model, domain::steps::find_many);

/// A template's steps, in `stepOrder`.
pub struct StepsOfTemplate(pub DatabaseConnection);

impl Loader<String> for StepsOfTemplate {
    type Value = Vec<step::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::steps::of_templates(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Vec<step::Model>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.workflow_template_id.clone()).or_default().push(r);
        }
        Ok(map)
    }
}

/// An execution's step records, in `stepOrder`.
pub struct StepsOfExecution(pub DatabaseConnection);

impl Loader<String> for StepsOfExecution {
    type Value = Vec<exec_step::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::executions::steps_of(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Vec<exec_step::Model>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.workflow_execution_id.clone()).or_default().push(r);
        }
        Ok(map)
    }
}

/// A drive's members, in the order they joined.
pub struct MembersOfDrive(pub DatabaseConnection);

impl Loader<String> for MembersOfDrive {
    type Value = Vec<drive_member::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let mut map = domain::drives::members_of(&self.0, keys).await.map_err(Arc::new)?;
        for k in keys {
            map.entry(k.clone()).or_default();
        }
        Ok(map)
    }
}

/// All loaders of one request.
pub struct Loaders {
    pub users: DataLoader<UserLoader>,
    pub drives: DataLoader<DriveLoader>,
    pub templates: DataLoader<TemplateLoader>,
    pub steps: DataLoader<StepLoader>,
    pub steps_of_template: DataLoader<StepsOfTemplate>,
    pub steps_of_execution: DataLoader<StepsOfExecution>,
    pub members_of_drive: DataLoader<MembersOfDrive>,
}

impl Loaders {
    pub fn new(db: &DatabaseConnection) -> Self {
        Self {
            users: DataLoader::new(UserLoader(db.clone()), tokio::spawn),
            drives: DataLoader::new(DriveLoader(db.clone()), tokio::spawn),
            templates: DataLoader::new(TemplateLoader(db.clone()), tokio::spawn),
            steps: DataLoader::new(StepLoader(db.clone()), tokio::spawn),
            steps_of_template: DataLoader::new(StepsOfTemplate(db.clone()), tokio::spawn),
            steps_of_execution: DataLoader::new(StepsOfExecution(db.clone()), tokio::spawn),
            members_of_drive: DataLoader::new(MembersOfDrive(db.clone()), tokio::spawn),
        }
    }
}
