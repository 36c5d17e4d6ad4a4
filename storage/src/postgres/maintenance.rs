//! `GET /v1/storage` and `POST /v1/storage/maintenance` on PostgreSQL.
//!
//! # What [`StorageStats`] means here
//! - `tables`: every herald table ([`schema::TABLES`]) and every secondary index on them, by
//!   name; an index has `index_of` naming its table. The indexes standing for redb's secondary
//!   tables bear their names (`deliveries_due`, `dead_letters`, `messages_by_recipient`,
//!   `suppressions_by_expiry`, `audit_by_subject`), so `entries("dead_letters")`, the DLQ depth
//!   of `/metrics` and of the DLQ alert, means the same on both backends. Primary-key indexes are
//!   not listed: they are their tables.
//! - `entries`: rows of a table, entries of an index (a partial index holds the rows matching its
//!   `WHERE`; a full one, every row of its table). **Exact up to [`EXACT_UP_TO`]**: each is
//!   counted, but no count reads more than that many rows, so the cost is bounded (one statement,
//!   a few index-only scans) whatever the database holds. Beyond it, PostgreSQL's estimate:
//!   `n_live_tup` for a table (kept by the statistics system as rows are written, within a
//!   second or so), `reltuples` for a partial index (as of the last `VACUUM`/`ANALYZE`); never
//!   less than the rows counted. Small numbers, where an operator or an alert compares them
//!   exactly ("the DLQ is empty", "3 dead"), are exact; large ones are right to a few percent.
//! - `file_bytes`: `pg_database_size`, the whole database on disk (tables, indexes, TOAST; not
//!   the WAL), shared by every node. Like redb's file it does not shrink when rows are deleted:
//!   `VACUUM` makes the space reusable, only `VACUUM FULL` returns it to the file system.
//! - `schema_version`: `herald_meta`'s, the version of [`schema`].
//!
//! # Maintenance
//! There is nothing for herald to verify or repair: PostgreSQL updates every index with its
//! table in the same transaction, and WAL replay keeps both consistent through a crash. The
//! report says so (no index entries, `integrity: None`, `compacted: false`) and names the
//! operator's tools instead: `VACUUM` (autovacuum runs it by itself), `VACUUM FULL`, `REINDEX`,
//! `amcheck`. It reads how many dead rows await `VACUUM`, which also shows the database
//! answered.

use std::collections::HashMap;
use std::time::Instant;

use deadpool_postgres::GenericClient;

use super::schema;
use crate::error::{Result, StorageError};
use crate::{MaintenanceReport, StorageStats, TableInfo};

/// Counts up to this many rows are exact; see the module docs.
const EXACT_UP_TO: u64 = 10_000;

/// One listed relation: a table, or a secondary index of one.
struct Relation {
    name: String,
    /// The index's table: one of [`schema::TABLES`].
    index_of: Option<&'static str>,
    /// What selects the rows counted (a partial index's predicate).
    predicate: Option<String>,
    /// PostgreSQL's estimate, for counts beyond [`EXACT_UP_TO`].
    estimate: u64,
}

pub(super) async fn stats(client: &impl GenericClient) -> Result<StorageStats> {
    let version = client
        .prepare_cached("SELECT value FROM herald_meta WHERE name = 'schema_version'")
        .await?;
    let schema_version = client
        .query_opt(&version, &[])
        .await?
        .map(|row| row.get::<_, i64>(0))
        .ok_or_else(|| StorageError::corrupt("herald_meta", "no schema version"))?;
    let size = client
        .prepare_cached("SELECT pg_database_size(current_database())")
        .await?;
    let file_bytes: i64 = client.query_one(&size, &[]).await?.get(0);

    let relations = relations(client).await?;
    let counted = bounded_counts(client, &relations).await?;
    let by_name: HashMap<&str, u64> = relations
        .iter()
        .zip(&counted)
        .map(|(r, n)| (r.name.as_str(), *n))
        .collect();
    let mut tables: Vec<TableInfo> = relations
        .iter()
        .zip(&counted)
        .map(|(relation, &counted)| {
            // A full index has an entry per row of its table: the table's count.
            let counted = match (relation.index_of, &relation.predicate) {
                (Some(table), None) => by_name.get(table).copied().unwrap_or(counted),
                _ => counted,
            };
            TableInfo {
                name: relation.name.clone(),
                entries: entries(counted, relation.estimate),
                index_of: relation.index_of,
            }
        })
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StorageStats {
        schema_version: u64::try_from(schema_version).unwrap_or(0),
        file_bytes: u64::try_from(file_bytes).unwrap_or(0),
        tables,
    })
}

/// The number shown for a relation whose bounded count is `counted` (at most
/// `EXACT_UP_TO + 1`): exact when the count was complete.
fn entries(counted: u64, estimate: u64) -> u64 {
    if counted <= EXACT_UP_TO {
        counted
    } else {
        estimate.max(counted)
    }
}

/// herald's tables and their secondary indexes, as the catalog has them. Names resolve through
/// the `search_path`, exactly as herald's unqualified statements do.
async fn relations(client: &impl GenericClient) -> Result<Vec<Relation>> {
    let tables = client
        .prepare_cached(
            "SELECT t.name, COALESCE(s.n_live_tup, 0)::int8
             FROM unnest($1::text[]) AS t (name)
             JOIN pg_class c ON c.oid = to_regclass(quote_ident(t.name))
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid",
        )
        .await?;
    let indexes = client
        .prepare_cached(
            "SELECT ic.relname::text, t.name, GREATEST(ic.reltuples, 0)::int8,
                    pg_get_expr(i.indpred, i.indrelid)
             FROM unnest($1::text[]) AS t (name)
             JOIN pg_index i ON i.indrelid = to_regclass(quote_ident(t.name))
             JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE NOT i.indisprimary",
        )
        .await?;
    let names = schema::TABLES;
    let mut out = Vec::new();
    for row in client.query(&tables, &[&names]).await? {
        out.push(Relation {
            name: row.get(0),
            index_of: None,
            predicate: None,
            estimate: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        });
    }
    for row in client.query(&indexes, &[&names]).await? {
        let table: &str = row.get(1);
        out.push(Relation {
            name: row.get(0),
            index_of: names.iter().copied().find(|t| *t == table),
            predicate: row.get(3),
            estimate: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Each relation's rows (a table's, or those its partial index holds), counted up to
/// `EXACT_UP_TO + 1` so that a complete count can be told from a cut one: one statement.
async fn bounded_counts(client: &impl GenericClient, relations: &[Relation]) -> Result<Vec<u64>> {
    if relations.is_empty() {
        return Ok(Vec::new());
    }
    let cap = EXACT_UP_TO + 1;
    let columns: Vec<String> = relations
        .iter()
        .map(|relation| {
            let table = quote_ident(relation.index_of.unwrap_or(&relation.name));
            let filter = relation
                .predicate
                .as_ref()
                .map_or_else(String::new, |p| format!(" WHERE {p}"));
            format!("(SELECT count(*) FROM (SELECT 1 FROM {table}{filter} LIMIT {cap}) AS bounded)")
        })
        .collect();
    // The statement's text follows the schema alone, so the cached plan is reused.
    let sql = format!("SELECT {}", columns.join(", "));
    let statement = client.prepare_cached(&sql).await?;
    let row = client.query_one(&statement, &[]).await?;
    Ok((0..relations.len())
        .map(|i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0))
        .collect())
}

/// `name` as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const INTEGRITY_NOTE: &str = "nothing to verify or repair here: PostgreSQL updates every \
    index with its table in the same transaction and keeps both consistent through a crash \
    (WAL replay); checking pages is the operator's (data checksums, the amcheck extension)";

/// The report of `POST /v1/storage/maintenance`: nothing to do, and why (`repair` changes
/// nothing: there is nothing to repair).
pub(super) async fn report(client: &impl GenericClient, repair: bool) -> Result<MaintenanceReport> {
    let _ = repair;
    let started = Instant::now();
    let dead = client
        .prepare_cached(
            "SELECT COALESCE(sum(s.n_dead_tup), 0)::int8
             FROM unnest($1::text[]) AS t (name)
             JOIN pg_stat_user_tables s ON s.relid = to_regclass(quote_ident(t.name))",
        )
        .await?;
    let dead: i64 = client.query_one(&dead, &[&schema::TABLES]).await?.get(0);
    Ok(MaintenanceReport {
        indexes: Vec::new(),
        integrity: None,
        integrity_note: Some(INTEGRITY_NOTE.to_owned()),
        compacted: false,
        compaction_note: Some(format!(
            "not done by herald: PostgreSQL reuses the space of deleted rows once VACUUM has \
             run, which autovacuum does by itself ({dead} dead rows await it now); VACUUM FULL \
             (returns space to the file system, locking each table meanwhile) and REINDEX \
             (rebuilds a bloated index) are the operator's tools"
        )),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_exact_and_large_ones_never_below_what_was_counted() {
        assert_eq!(
            entries(0, 500),
            0,
            "a stale estimate never hides an empty table"
        );
        assert_eq!(entries(3, 0), 3);
        assert_eq!(entries(EXACT_UP_TO, 0), EXACT_UP_TO);
        assert_eq!(entries(EXACT_UP_TO + 1, 2_000_000), 2_000_000);
        assert_eq!(entries(EXACT_UP_TO + 1, 7), EXACT_UP_TO + 1);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("audit"), "\"audit\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
