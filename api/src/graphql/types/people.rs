//! Users, drives and their members, and the agents a step may name.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{drive, drive_member, user};

use super::enums::DriveRoleGql;
use super::load::{load_err, missing, utc};
use super::plain::plain_object;
use crate::error::ApiError;
use crate::graphql::RequestCtx;

pub struct User(pub user::Model);

plain_object! {
    #[Object]
    User(row) {
        plain "id" id: id(row.id),
        plain "name" name: opt_str(row.name),
        plain "email" email: opt_str(row.email),
    }
}

pub(crate) async fn load_user(ctx: &Context<'_>, id: &str) -> Result<User> {
    let r = ctx.data_unchecked::<RequestCtx>();
    r.loaders
        .users
        .load_one(id.to_owned())
        .await
        .map_err(load_err)?
        .map(User)
        .ok_or_else(|| missing("user", id))
}

pub struct Drive(pub drive::Model);

#[Object]
impl Drive {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn owner(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.owner_id).await
    }
    /// The viewer's role in this drive.
    async fn my_role(&self, ctx: &Context<'_>) -> Result<DriveRoleGql> {
        let r = ctx.data_unchecked::<RequestCtx>();
        r.access()
            .await?
            .role(&self.0.id)
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("drive", &self.0.id).into())
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<DriveMember>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let rows = r
            .loaders
            .members_of_drive
            .load_one(self.0.id.clone())
            .await
            .map_err(load_err)?
            .unwrap_or_default();
        Ok(rows.into_iter().map(DriveMember).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
}

pub struct DriveMember(pub drive_member::Model);

#[Object]
impl DriveMember {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.user_id).await
    }
    async fn role(&self) -> DriveRoleGql {
        self.0.role.into()
    }
}

#[derive(SimpleObject)]
pub struct Agent {
    pub id: ID,
    pub description: Option<String>,
    pub provider: String,
}
