//! The research calls' parsing: prices, weights and analyses from their wire form, and back.
//! The handlers in [`super::admin`] call these and one store function each.

use super::parse_uuid;
use crate::domain::pricing::{self, ElectricityPrice, Price};
use crate::store::research::Routing;
use chrono::{DateTime, Utc};
use ipw_proto::v1::{ElectricityPriceSpec, PriceList, PriceSpec, RoutingQuery};
use tonic::Status;
use uuid::Uuid;

fn time(field: &str, unix_us: Option<i64>) -> Result<Option<DateTime<Utc>>, Status> {
    unix_us
        .map(|us| {
            DateTime::from_timestamp_micros(us)
                .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
        })
        .transpose()
}

/// A model price from the wire, validated; `valid_from` unset means now.
pub fn price(spec: PriceSpec) -> Result<Price, Status> {
    Ok(Price {
        model: spec.model,
        input_per_mtok: spec.input_per_mtok,
        output_per_mtok: spec.output_per_mtok,
        currency: spec.currency,
        valid_from: time("valid_from", spec.valid_from_unix_us)?.unwrap_or_else(Utc::now),
        valid_to: time("valid_to", spec.valid_to_unix_us)?,
        source: spec.source,
    }
    .validated()?)
}

/// The electricity price from the wire, validated; `valid_from` unset means now.
pub fn electricity(spec: ElectricityPriceSpec) -> Result<ElectricityPrice, Status> {
    Ok(ElectricityPrice {
        per_kwh: spec.per_kwh,
        currency: spec.currency,
        valid_from: time("valid_from", spec.valid_from_unix_us)?.unwrap_or_else(Utc::now),
        valid_to: time("valid_to", spec.valid_to_unix_us)?,
        source: spec.source,
    }
    .validated()?)
}

/// Prices as they cross gRPC (electricity prices with an empty model and `input_per_mtok`
/// holding the price per kWh).
pub fn price_list(prices: Vec<Price>) -> PriceList {
    PriceList {
        prices: prices
            .into_iter()
            .map(|p| PriceSpec {
                model: p.model,
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
                currency: p.currency,
                valid_from_unix_us: Some(p.valid_from.timestamp_micros()),
                valid_to_unix_us: p.valid_to.map(|t| t.timestamp_micros()),
                source: p.source,
            })
            .collect(),
    }
}

/// A prices CSV, every row validated, with its line number.
pub fn prices_csv(csv: &str) -> Result<Vec<(u64, Price)>, Status> {
    Ok(pricing::parse_prices_csv(csv, Utc::now())?)
}

/// A routing query's arguments; the SQL function checks the objective and the accuracy.
pub fn routing(q: RoutingQuery) -> Result<Routing, Status> {
    if q.run_ids.is_empty() {
        return Err(Status::invalid_argument("routing needs at least one run besides the fallback"));
    }
    Ok(Routing {
        runs: q.run_ids.iter().map(|r| parse_uuid("run", r)).collect::<Result<Vec<Uuid>, _>>()?,
        fallback: parse_uuid("fallback run", &q.fallback_run_id)?,
        objective: q.objective,
        router_accuracy: q.router_accuracy,
        seed: q.seed,
    })
}
