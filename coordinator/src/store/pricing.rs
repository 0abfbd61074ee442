//! `prices`, `electricity_prices` and the weight sets: what the cost and weighted views read.

use super::{Error, Result};
use crate::domain::pricing::{ElectricityPrice, Price};
use sqlx::{PgConnection, PgPool};

/// A rule the schema enforces (an overlapping window, a bad value) becomes `Invalid` with the
/// database's own message; anything else stays a database error.
pub(crate) fn rule_broken(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")) => {
            Error::Invalid(d.message().to_owned())
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("P0002") => Error::NotFound(d.message().to_owned()),
        _ => Error::Db(e),
    }
}

/// Sets a model's price from `valid_from`: a price of the model that is open-ended and began
/// earlier is closed there (a price change); any other overlap is refused.
pub async fn set_price(conn: &mut PgConnection, p: &Price) -> Result<()> {
    sqlx::query!(
        "UPDATE prices SET valid_to = $2 WHERE model = $1 AND valid_to IS NULL AND valid_from < $2",
        p.model,
        p.valid_from
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO prices (model, input_per_mtok, output_per_mtok, currency, valid_from, valid_to, source)
         VALUES ($1, $2::float8::numeric, $3::float8::numeric, $4, $5, $6, $7)",
        p.model,
        p.input_per_mtok,
        p.output_per_mtok,
        p.currency,
        p.valid_from,
        p.valid_to,
        p.source
    )
    .execute(&mut *conn)
    .await
    .map_err(rule_broken)?;
    Ok(())
}

/// Sets the electricity price from `valid_from`, closing the open-ended one it follows.
pub async fn set_electricity_price(conn: &mut PgConnection, p: &ElectricityPrice) -> Result<()> {
    sqlx::query!(
        "UPDATE electricity_prices SET valid_to = $1 WHERE valid_to IS NULL AND valid_from < $1",
        p.valid_from
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO electricity_prices (per_kwh, currency, valid_from, valid_to, source)
         VALUES ($1::float8::numeric, $2, $3, $4, $5)",
        p.per_kwh,
        p.currency,
        p.valid_from,
        p.valid_to,
        p.source
    )
    .execute(&mut *conn)
    .await
    .map_err(rule_broken)?;
    Ok(())
}

/// Every model price (by model, oldest first), then every electricity price (model empty).
pub async fn list(pool: &PgPool) -> Result<Vec<Price>> {
    let rows = sqlx::query!(
        r#"SELECT model AS "model!", input_per_mtok::float8 AS "input!", output_per_mtok::float8 AS "output!",
                  currency AS "currency!", valid_from AS "valid_from!", valid_to, source AS "source!"
           FROM (SELECT 0 AS kind, model, input_per_mtok, output_per_mtok, currency, valid_from, valid_to, source
                 FROM prices
                 UNION ALL
                 SELECT 1, '', per_kwh, 0, currency, valid_from, valid_to, source FROM electricity_prices) p
           ORDER BY kind, model, valid_from"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Price {
            model: r.model,
            input_per_mtok: r.input,
            output_per_mtok: r.output,
            currency: r.currency,
            valid_from: r.valid_from,
            valid_to: r.valid_to,
            source: r.source,
        })
        .collect())
}

/// Replaces the weight set `name` with `weights`.
pub async fn import_weights(
    conn: &mut PgConnection,
    name: &str,
    source: &str,
    weights: &[(String, f64)],
) -> Result<()> {
    sqlx::query!("DELETE FROM weight_sets WHERE name = $1", name).execute(&mut *conn).await?;
    sqlx::query!("INSERT INTO weight_sets (name, source) VALUES ($1, $2)", name, source)
        .execute(&mut *conn)
        .await
        .map_err(rule_broken)?;
    let (categories, values): (Vec<String>, Vec<f64>) = weights.iter().cloned().unzip();
    sqlx::query!(
        "INSERT INTO task_weights (set_name, category, weight) SELECT $1, c, w FROM unnest($2::text[], $3::float8[]) AS t(c, w)",
        name,
        &categories,
        &values
    )
    .execute(&mut *conn)
    .await
    .map_err(rule_broken)?;
    Ok(())
}
