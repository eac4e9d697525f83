use sea_orm::entity::prelude::*;

use crate::DriveRole;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "drive_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "driveId")]
    pub drive_id: String,
    #[sea_orm(column_name = "userId")]
    pub user_id: String,
    pub role: DriveRole,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::drive::Entity",
        from = "Column::DriveId",
        to = "super::drive::Column::Id",
        on_delete = "Cascade"
    )]
    Drive,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::drive::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Drive.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
