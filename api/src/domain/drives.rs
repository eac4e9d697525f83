//! Drives and their members.

use std::collections::HashMap;

use entity::{DriveRole, drive, drive_member};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::{new_id, now};

/// Creates a drive owned by `owner_id`, who becomes its OWNER member.
pub async fn create(db: &DatabaseConnection, owner_id: &str, name: &str) -> Result<drive::Model, DbErr> {
    let txn = db.begin().await?;
    let at = now();
    let row = drive::Model {
        id: new_id(),
        name: name.to_owned(),
        owner_id: owner_id.to_owned(),
        created_at: at,
    };
    drive::Entity::insert(drive::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await?;
    drive_member::Entity::insert(drive_member::ActiveModel {
        id: Set(new_id()),
        drive_id: Set(row.id.clone()),
        user_id: Set(owner_id.to_owned()),
        role: Set(DriveRole::Owner),
        created_at: Set(at),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(row)
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<drive::Model>, DbErr> {
    drive::Entity::find_by_id(id.to_owned()).one(db).await
}

pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<drive::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    drive::Entity::find()
        .filter(drive::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await
}

/// Drives by id, newest first.
pub async fn list(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<drive::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    drive::Entity::find()
        .filter(drive::Column::Id.is_in(ids.iter().cloned()))
        .order_by_desc(drive::Column::CreatedAt)
        .order_by_desc(drive::Column::Id)
        .all(db)
        .await
}

/// Members of each drive, in the order they joined.
pub async fn members_of(
    db: &impl ConnectionTrait,
    drive_ids: &[String],
) -> Result<HashMap<String, Vec<drive_member::Model>>, DbErr> {
    let rows = drive_member::Entity::find()
        .filter(drive_member::Column::DriveId.is_in(drive_ids.iter().cloned()))
        .order_by_asc(drive_member::Column::CreatedAt)
        .order_by_asc(drive_member::Column::Id)
        .all(db)
        .await?;
    let mut map: HashMap<String, Vec<drive_member::Model>> = HashMap::new();
    for r in rows {
        map.entry(r.drive_id.clone()).or_default().push(r);
    }
    Ok(map)
}

pub async fn member(
    db: &impl ConnectionTrait,
    drive_id: &str,
    user_id: &str,
) -> Result<Option<drive_member::Model>, DbErr> {
    drive_member::Entity::find()
        .filter(drive_member::Column::DriveId.eq(drive_id))
        .filter(drive_member::Column::UserId.eq(user_id))
        .one(db)
        .await
}

/// Adds a member or changes an existing member's role; returns the row.
pub async fn set_member(
    db: &impl ConnectionTrait,
    drive_id: &str,
    user_id: &str,
    role: DriveRole,
) -> Result<drive_member::Model, DbErr> {
    drive_member::Entity::insert(drive_member::ActiveModel {
        id: Set(new_id()),
        drive_id: Set(drive_id.to_owned()),
        user_id: Set(user_id.to_owned()),
        role: Set(role),
        created_at: Set(now()),
    })
    .on_conflict(
        OnConflict::columns([drive_member::Column::DriveId, drive_member::Column::UserId])
            .update_column(drive_member::Column::Role)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    member(db, drive_id, user_id)
        .await?
        .ok_or(DbErr::RecordNotFound("drive member".into()))
}

/// Removes a member; true when a row was deleted.
pub async fn remove_member(db: &impl ConnectionTrait, drive_id: &str, user_id: &str) -> Result<bool, DbErr> {
    let res = drive_member::Entity::delete_many()
        .filter(drive_member::Column::DriveId.eq(drive_id))
        .filter(drive_member::Column::UserId.eq(user_id))
        .filter(drive_member::Column::Role.ne(DriveRole::Owner))
        .exec(db)
        .await?;
    Ok(res.rows_affected > 0)
}
