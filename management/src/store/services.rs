//! Services and their restrictions. Changes go through [`ServicesChange`], which locks the
//! revision row first, so that validating the whole set and writing it are one atomic step even
//! with several management replicas on one PostgreSQL.

use nb_api::ServiceSpec;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub spec: ServiceSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Service {
    pub fn id(&self) -> &str {
        &self.spec.id
    }
}

fn service_from_row(row: &AnyRow) -> Result<Service, StoreError> {
    let id: String = row.try_get("id")?;
    let spec: String = row.try_get("spec")?;
    let spec: ServiceSpec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Corrupt(format!("service {id}: {e}")))?;
    Ok(Service {
        name: row.try_get("name")?,
        spec,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const SELECT: &str = "SELECT id, name, spec, created_at, updated_at FROM services";

impl Store {
    pub async fn services(&self) -> Result<Vec<Service>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(service_from_row).collect()
    }

    /// The services and the revision they belong to, read consistently.
    pub async fn services_at_revision(&self) -> Result<(i64, Vec<Service>), StoreError> {
        let mut tx = self.pool().begin().await?;
        let revision: i64 = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("value")?;
        let rows = sqlx::query(&format!("{SELECT} ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            revision,
            rows.iter()
                .map(service_from_row)
                .collect::<Result<_, _>>()?,
        ))
    }

    pub async fn service(&self, id: &str) -> Result<Option<Service>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(service_from_row).transpose()
    }

    /// Starts a change: bumps the revision (taking the write lock) and loads every service.
    /// Dropping the change without [`ServicesChange::commit`] undoes it.
    pub async fn change_services(&self) -> Result<ServicesChange, StoreError> {
        let mut tx = self.pool().begin().await?;
        let revision: i64 =
            sqlx::query("UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value")
                .fetch_one(&mut *tx)
                .await?
                .try_get("value")?;
        let rows = sqlx::query(&format!("{SELECT} ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?;
        let services = rows
            .iter()
            .map(service_from_row)
            .collect::<Result<_, _>>()?;
        Ok(ServicesChange {
            tx,
            revision,
            services,
        })
    }
}

pub struct ServicesChange {
    tx: Transaction<'static, Any>,
    revision: i64,
    /// Every service as stored when the change began.
    pub services: Vec<Service>,
}

impl ServicesChange {
    pub fn get(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id() == id)
    }

    /// Inserts a new service; its `created_at`/`updated_at` are set here.
    pub async fn insert(&mut self, name: &str, spec: &ServiceSpec) -> Result<Service, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO services (id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(spec.id.as_str())
        .bind(name)
        .bind(spec_json(spec))
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::from_write(e, || format!("service \"{}\"", spec.id)))?;
        Ok(Service {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Replaces a service's name and spec; `None` if it does not exist.
    pub async fn update(
        &mut self,
        name: &str,
        spec: &ServiceSpec,
    ) -> Result<Option<Service>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE services SET name = $2, spec = $3, updated_at = $4 WHERE id = $1 RETURNING created_at",
        )
        .bind(spec.id.as_str())
        .bind(name)
        .bind(spec_json(spec))
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Service {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at: row.try_get("created_at")?,
            updated_at: now,
        }))
    }

    pub async fn delete(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM services WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes the change visible; returns the new revision.
    pub async fn commit(self) -> Result<i64, StoreError> {
        self.tx.commit().await?;
        Ok(self.revision)
    }
}

fn spec_json(spec: &ServiceSpec) -> String {
    // Plain data: serialising cannot fail.
    serde_json::to_string(spec).unwrap_or_default()
}
