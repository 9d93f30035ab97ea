//! Services and their restrictions. Changes go through [`ServicesChange`], which locks the
//! revision row first, so that checking a service against the others and writing it are one
//! atomic step even with several management replicas on one PostgreSQL. What each service
//! claims (hosts, listen addresses) is kept in `service_routes`, unique, so that the check
//! reads only the rows it needs, whatever the number of services.

use nb_api::ServiceSpec;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub spec: ServiceSpec,
    /// The proxy groups whose proxies serve it.
    pub groups: Vec<String>,
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
    let groups: String = row.try_get("groups")?;
    let groups: Vec<String> = serde_json::from_str(&groups)
        .map_err(|e| StoreError::Corrupt(format!("service {id}: groups: {e}")))?;
    Ok(Service {
        name: row.try_get("name")?,
        spec,
        groups,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const SELECT: &str = "SELECT id, name, spec, groups, created_at, updated_at FROM services";

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

    /// Starts a change: bumps the revision (taking the write lock). Dropping the change without
    /// [`ServicesChange::commit`] undoes it.
    pub async fn change_services(&self) -> Result<ServicesChange, StoreError> {
        let mut tx = self.pool().begin().await?;
        let revision: i64 =
            sqlx::query("UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value")
                .fetch_one(&mut *tx)
                .await?
                .try_get("value")?;
        Ok(ServicesChange { tx, revision })
    }

    /// Fills `service_routes` from the stored services once (databases from before the table
    /// existed). `routes_of` is the validator's: the store does not interpret specs.
    pub async fn index_routes(
        &self,
        routes_of: impl Fn(&ServiceSpec) -> Vec<(&'static str, String)>,
    ) -> Result<usize, StoreError> {
        const DONE: &str = "service_routes_indexed";
        if self.setting(DONE).await?.is_some() {
            return Ok(0);
        }
        let mut tx = self.pool().begin().await?;
        // Taking the revision row's lock serialises replicas starting together.
        sqlx::query("UPDATE revision SET value = value WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(&format!("{SELECT} ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?;
        let mut n = 0;
        for row in &rows {
            let service = service_from_row(row)?;
            for (kind, key) in routes_of(&service.spec) {
                sqlx::query(
                    "INSERT INTO service_routes (kind, route, service_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (kind, route) DO NOTHING",
                )
                .bind(kind)
                .bind(key)
                .bind(service.id())
                .execute(&mut *tx)
                .await?;
                n += 1;
            }
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, 'yes') ON CONFLICT (key) DO NOTHING",
        )
        .bind(DONE)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}

pub struct ServicesChange {
    tx: Transaction<'static, Any>,
    revision: i64,
}

impl ServicesChange {
    pub async fn get(&mut self, id: &str) -> Result<Option<Service>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(service_from_row).transpose()
    }

    /// Which services hold these routes (their own ones included).
    pub async fn route_owners(
        &mut self,
        routes: &[(&'static str, String)],
    ) -> Result<Vec<((&'static str, String), String)>, StoreError> {
        let mut owners = Vec::new();
        for (kind, key) in routes {
            let row =
                sqlx::query("SELECT service_id FROM service_routes WHERE kind = $1 AND route = $2")
                    .bind(*kind)
                    .bind(key.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await?;
            if let Some(row) = row {
                owners.push(((*kind, key.clone()), row.try_get("service_id")?));
            }
        }
        Ok(owners)
    }

    /// Inserts a new service and its routes; its `created_at`/`updated_at` are set here.
    pub async fn insert(
        &mut self,
        name: &str,
        spec: &ServiceSpec,
        groups: &[String],
        routes: &[(&'static str, String)],
    ) -> Result<Service, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO services (id, name, spec, groups, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(spec.id.as_str())
        .bind(name)
        .bind(spec_json(spec))
        .bind(groups_json(groups))
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::from_write(e, || format!("service \"{}\"", spec.id)))?;
        self.claim(&spec.id, routes).await?;
        Ok(Service {
            name: name.to_owned(),
            spec: spec.clone(),
            groups: groups.to_vec(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Replaces a service's name, spec and routes; `None` if it does not exist.
    pub async fn update(
        &mut self,
        name: &str,
        spec: &ServiceSpec,
        groups: &[String],
        routes: &[(&'static str, String)],
    ) -> Result<Option<Service>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE services SET name = $2, spec = $3, groups = $4, updated_at = $5 \
             WHERE id = $1 RETURNING created_at",
        )
        .bind(spec.id.as_str())
        .bind(name)
        .bind(spec_json(spec))
        .bind(groups_json(groups))
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        self.release(&spec.id).await?;
        self.claim(&spec.id, routes).await?;
        Ok(Some(Service {
            name: name.to_owned(),
            spec: spec.clone(),
            groups: groups.to_vec(),
            created_at: row.try_get("created_at")?,
            updated_at: now,
        }))
    }

    pub async fn delete(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM services WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        self.release(id).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim(
        &mut self,
        id: &str,
        routes: &[(&'static str, String)],
    ) -> Result<(), StoreError> {
        for (kind, key) in routes {
            sqlx::query("INSERT INTO service_routes (kind, route, service_id) VALUES ($1, $2, $3)")
                .bind(*kind)
                .bind(key.as_str())
                .bind(id)
                .execute(&mut *self.tx)
                .await
                .map_err(|e| StoreError::from_write(e, || format!("{kind} {key}")))?;
        }
        Ok(())
    }

    async fn release(&mut self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM service_routes WHERE service_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Moves a proxy to another group; false if it does not exist. Done within a change of the
    /// services so that the revision bump wakes the proxy's stream, which then sends the new
    /// group's services.
    pub async fn move_proxy(&mut self, id: &str, group: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE proxies SET group_name = $2 WHERE id = $1")
            .bind(id)
            .bind(group)
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

fn groups_json(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".into())
}

fn spec_json(spec: &ServiceSpec) -> String {
    // Plain data: serialising cannot fail.
    serde_json::to_string(spec).unwrap_or_default()
}
