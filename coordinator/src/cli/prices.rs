//! `ipw price` and `ipw weights`: the prices cost is computed at, and the task weights of
//! weighted IPW.

use super::render::table::{render_table, when};
use super::{Admin, refused};
use crate::domain::pricing::{parse_per_kwh, parse_time};
use anyhow::Context;
use clap::Subcommand;
use ipw_proto::v1::{
    ElectricityPriceSpec, ImportPricesRequest, ImportWeightsRequest, ListPricesRequest, PriceList, PriceSpec,
};
use std::path::PathBuf;

/// `ipw price ...`
#[derive(Subcommand, Debug)]
pub enum PriceCmd {
    /// Sets a model's API price per million tokens from --from on (default now); an
    /// open-ended price of the model that began earlier ends there.
    Set {
        /// The model's name, as runs name it.
        model: String,
        /// Price per million input tokens.
        #[arg(long)]
        input: f64,
        /// Price per million output tokens.
        #[arg(long)]
        output: f64,
        /// ISO 4217 currency.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Where the price came from (a pricing page and the day read). Required.
        #[arg(long)]
        source: String,
        /// Valid from (2026-11-30 or RFC 3339); default now.
        #[arg(long)]
        from: Option<String>,
        /// Valid until (exclusive); default open-ended.
        #[arg(long)]
        to: Option<String>,
    },
    /// Lists every model price, then the electricity prices.
    List,
    /// Imports prices from CSV (model,input_per_mtok,output_per_mtok,currency,valid_from,
    /// valid_to,source), all or nothing.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Sets the electricity price local runs are costed at, e.g. `0.30/kWh`.
    Electricity {
        /// Price per kWh: `0.30/kWh` or `0.30`.
        per_kwh: String,
        /// ISO 4217 currency.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Where the price came from.
        #[arg(long, default_value = "")]
        source: String,
        /// Valid from (2026-11-30 or RFC 3339); default now.
        #[arg(long)]
        from: Option<String>,
    },
}

/// `ipw weights ...`
#[derive(Subcommand, Debug)]
pub enum WeightsCmd {
    /// Imports a weight set from CSV (category,weight), replacing one of the same name.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The set's name, as `ipw weighted NAME` and `ipw_weighted(name)` take it.
        #[arg(long)]
        name: String,
        /// Where the weights came from and how they were mapped to the categories.
        #[arg(long, default_value = "")]
        source: String,
    },
}

fn unix_us(field: &str, t: Option<String>) -> anyhow::Result<Option<i64>> {
    Ok(t.map(|t| parse_time(field, &t)).transpose()?.map(|t| t.timestamp_micros()))
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Runs one `ipw price` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: PriceCmd) -> anyhow::Result<()> {
    let list = match cmd {
        PriceCmd::Set { model, input, output, currency, source, from, to } => {
            let spec = PriceSpec {
                model,
                input_per_mtok: input,
                output_per_mtok: output,
                currency,
                valid_from_unix_us: unix_us("--from", from)?,
                valid_to_unix_us: unix_us("--to", to)?,
                source,
            };
            admin.set_price(spec).await
        }
        PriceCmd::List => admin.list_prices(ListPricesRequest {}).await,
        PriceCmd::Import { file } => admin.import_prices(ImportPricesRequest { csv: read(&file)? }).await,
        PriceCmd::Electricity { per_kwh, currency, source, from } => {
            let spec = ElectricityPriceSpec {
                per_kwh: parse_per_kwh(&per_kwh)?,
                currency,
                valid_from_unix_us: unix_us("--from", from)?,
                valid_to_unix_us: None,
                source,
            };
            admin.set_electricity_price(spec).await
        }
    };
    print!("{}", render_prices(&list.map_err(refused(url))?.into_inner()));
    Ok(())
}

/// Runs one `ipw weights` command.
pub async fn weights(admin: &mut Admin, url: &str, cmd: WeightsCmd) -> anyhow::Result<()> {
    let WeightsCmd::Import { file, name, source } = cmd;
    let request = ImportWeightsRequest { name: name.clone(), csv: read(&file)?, source };
    let r = admin.import_weights(request).await.map_err(refused(url))?.into_inner();
    println!("imported weight set {name:?}: {} categories", r.categories);
    Ok(())
}

fn render_prices(list: &PriceList) -> String {
    let rows = list.prices.iter().map(|p| {
        let (what, price) = match p.model.is_empty() {
            true => ("electricity".to_owned(), format!("{} {}/kWh", p.input_per_mtok, p.currency)),
            false => (
                p.model.clone(),
                format!("{} in / {} out {} per Mtok", p.input_per_mtok, p.output_per_mtok, p.currency),
            ),
        };
        let to = p.valid_to_unix_us.map(when).unwrap_or_else(|| "open".into());
        vec![what, price, when(p.valid_from_unix_us.unwrap_or_default()), to, p.source.clone()]
    });
    render_table(&["MODEL", "PRICE", "FROM", "TO", "SOURCE"], rows)
}
