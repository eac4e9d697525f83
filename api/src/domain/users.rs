//! Users come into being from token claims; memberships give their roles.

use std::collections::HashMap;

use entity::{DriveRole, drive_member, user};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};

use crate::auth::Viewer;

/// Creates or updates the `users` row for the token's subject. A claim that
/// the token leaves out keeps the stored value.
pub async fn upsert(db: &impl ConnectionTrait, viewer: &Viewer) -> Result<(), DbErr> {
    let mut update = Vec::new();
    if viewer.name.is_some() {
        update.push(user::Column::Name);
    }
    if viewer.email.is_some() {
        update.push(user::Column::Email);
    }
    let on_conflict = if update.is_empty() {
        OnConflict::column(user::Column::Id).do_nothing().to_owned()
    } else {
        OnConflict::column(user::Column::Id).update_columns(update).to_owned()
    };
    let row = user::ActiveModel {
        id: Set(viewer.id.clone()),
        name: Set(viewer.name.clone()),
        email: Set(viewer.email.clone()),
    };
    user::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The viewer's role in every drive they belong to.
pub async fn memberships(db: &impl ConnectionTrait, user_id: &str) -> Result<HashMap<String, DriveRole>, DbErr> {
    let rows: Vec<(String, DriveRole)> = drive_member::Entity::find()
        .select_only()
        .column(drive_member::Column::DriveId)
        .column(drive_member::Column::Role)
        .filter(drive_member::Column::UserId.eq(user_id))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id.to_owned()).one(db).await
}

pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await
}
