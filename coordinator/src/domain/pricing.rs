//! Prices and task weights as researchers give them: validated, with the CSV row named when one
//! is wrong. What they cost a query is computed in SQL (`query_costs`).

use super::Invalid;
use chrono::{DateTime, NaiveDate, Utc};

/// A model's API price per million tokens over a validity window.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// The model's name, as runs name it.
    pub model: String,
    /// Per million input tokens.
    pub input_per_mtok: f64,
    /// Per million output tokens.
    pub output_per_mtok: f64,
    /// ISO 4217.
    pub currency: String,
    /// From when it applies.
    pub valid_from: DateTime<Utc>,
    /// Until when (exclusive); `None`: still valid.
    pub valid_to: Option<DateTime<Utc>>,
    /// Where the figure came from.
    pub source: String,
}

/// The electricity price per kWh over a validity window.
#[derive(Debug, Clone, PartialEq)]
pub struct ElectricityPrice {
    /// Per kWh.
    pub per_kwh: f64,
    /// ISO 4217.
    pub currency: String,
    /// From when it applies.
    pub valid_from: DateTime<Utc>,
    /// Until when (exclusive); `None`: still valid.
    pub valid_to: Option<DateTime<Utc>>,
    /// Where the figure came from.
    pub source: String,
}

/// The columns of a prices CSV, in order.
pub const PRICE_COLUMNS: [&str; 7] =
    ["model", "input_per_mtok", "output_per_mtok", "currency", "valid_from", "valid_to", "source"];

/// The columns of a weights CSV, in order.
pub const WEIGHT_COLUMNS: [&str; 2] = ["category", "weight"];

impl Price {
    /// Checks every field; the message names the one that is wrong.
    pub fn validated(self) -> Result<Self, Invalid> {
        if self.model.trim().is_empty() || self.model.len() > 200 {
            return Err("model must be 1 to 200 characters".into());
        }
        amount("input_per_mtok", self.input_per_mtok)?;
        amount("output_per_mtok", self.output_per_mtok)?;
        currency(&self.currency)?;
        window(self.valid_from, self.valid_to)?;
        if self.source.trim().is_empty() {
            return Err("source is required: say where the price came from (a pricing page and the day read)".into());
        }
        Ok(self)
    }
}

impl ElectricityPrice {
    /// Checks every field; the message names the one that is wrong.
    pub fn validated(self) -> Result<Self, Invalid> {
        amount("price per kWh", self.per_kwh)?;
        currency(&self.currency)?;
        window(self.valid_from, self.valid_to)?;
        Ok(self)
    }
}

/// `0.30/kWh`, `0.30 /kwh` or `0.30`: the price per kWh.
pub fn parse_per_kwh(text: &str) -> Result<f64, Invalid> {
    let t = text.trim();
    let number = match t.to_ascii_lowercase().find("/kwh") {
        Some(i) if i + 4 == t.len() => t[..i].trim().to_owned(),
        Some(_) => {
            return Err(Invalid::new(format!("electricity price {text:?}: expected a number per kWh, e.g. 0.30/kWh")));
        }
        None if t.contains('/') => {
            return Err(Invalid::new(format!(
                "electricity price {text:?}: only a price per kWh is understood, e.g. 0.30/kWh"
            )));
        }
        None => t.to_owned(),
    };
    let v: f64 =
        number.parse().map_err(|_| Invalid::new(format!("electricity price {text:?}: {number:?} is not a number")))?;
    amount("electricity price", v)?;
    Ok(v)
}

/// A time as `2026-11-30` (midnight UTC) or RFC 3339.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, Invalid> {
    let t = text.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Invalid::new(format!("{field} {text:?} is not a date (2026-11-30) or an RFC 3339 time")))
}

/// Every row of a prices CSV (header [`PRICE_COLUMNS`]) with its line number; `valid_from`
/// empty means `now`.
pub fn parse_prices_csv(text: &str, now: DateTime<Utc>) -> Result<Vec<(u64, Price)>, Invalid> {
    let rows = read_csv(text, &PRICE_COLUMNS)?;
    rows.into_iter()
        .map(|(line, f)| {
            let row = || -> Result<Price, Invalid> {
                Price {
                    model: f[0].clone(),
                    input_per_mtok: number("input_per_mtok", &f[1])?,
                    output_per_mtok: number("output_per_mtok", &f[2])?,
                    currency: f[3].trim().to_owned(),
                    valid_from: if f[4].trim().is_empty() { now } else { parse_time("valid_from", &f[4])? },
                    valid_to: if f[5].trim().is_empty() { None } else { Some(parse_time("valid_to", &f[5])?) },
                    source: f[6].clone(),
                }
                .validated()
            };
            row().map(|p| (line, p)).map_err(|e| Invalid::new(format!("line {line}: {e}")))
        })
        .collect()
}

/// Every (category, weight) of a weights CSV (header [`WEIGHT_COLUMNS`]). A category twice,
/// a negative or non-finite weight, or weights that sum to zero, is an error.
pub fn parse_weights_csv(text: &str) -> Result<Vec<(String, f64)>, Invalid> {
    let rows = read_csv(text, &WEIGHT_COLUMNS)?;
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (line, f) in rows {
        let category = f[0].trim().to_owned();
        if category.is_empty() {
            return Err(Invalid::new(format!("line {line}: category is empty")));
        }
        let weight = number("weight", &f[1]).map_err(|e| Invalid::new(format!("line {line}: {e}")))?;
        if let Some(first) = seen.insert(category.clone(), line) {
            return Err(Invalid::new(format!("line {line}: category {category:?} was already given on line {first}")));
        }
        out.push((category, weight));
    }
    if out.is_empty() {
        return Err("the weights file has no rows".into());
    }
    if out.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err("the weights sum to zero: nothing would be weighted".into());
    }
    Ok(out)
}

/// The data rows of a CSV whose header must be `columns`, each with its line number.
fn read_csv(text: &str, columns: &[&str]) -> Result<Vec<(u64, Vec<String>)>, Invalid> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Invalid::new(format!("line 1: {e}")))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if header != columns {
        return Err(Invalid::new(format!(
            "line 1: the header must be {}, not {}",
            columns.join(","),
            header.join(",")
        )));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Invalid::new(format!("{e}")))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() != columns.len() {
            return Err(Invalid::new(format!("line {line}: {} fields, expected {}", record.len(), columns.len())));
        }
        rows.push((line, record.iter().map(str::to_owned).collect()));
    }
    Ok(rows)
}

fn number(field: &str, text: &str) -> Result<f64, Invalid> {
    let v: f64 = text.trim().parse().map_err(|_| Invalid::new(format!("{field} {text:?} is not a number")))?;
    amount(field, v)?;
    Ok(v)
}

fn amount(field: &str, v: f64) -> Result<(), Invalid> {
    if !v.is_finite() || v < 0.0 {
        return Err(Invalid::new(format!("{field} must be a finite number of at least 0, not {v}")));
    }
    Ok(())
}

fn currency(c: &str) -> Result<(), Invalid> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Invalid::new(format!("currency {c:?} must be an ISO 4217 code such as USD or EUR")));
    }
    Ok(())
}

fn window(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> Result<(), Invalid> {
    match to {
        Some(to) if to <= from => Err(Invalid::new(format!("valid_to {to} is not after valid_from {from}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_time("t", "2026-12-01T00:00:00Z").unwrap()
    }

    #[test]
    fn a_prices_csv_reads_every_field_and_quoted_sources() {
        let csv = "model,input_per_mtok,output_per_mtok,currency,valid_from,valid_to,source\n\
                   gpt-x,1.25,10,USD,2026-01-01,2026-07-01,\"pricing page, read 2026-01-02\"\n\
                   gpt-x,1.00,8,USD,2026-07-01,,page\n\
                   local,0,0,EUR,,,none\n";
        let p: Vec<Price> = parse_prices_csv(csv, now()).unwrap().into_iter().map(|(_, p)| p).collect();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].source, "pricing page, read 2026-01-02");
        assert_eq!(p[0].valid_to, Some(parse_time("t", "2026-07-01").unwrap()));
        assert_eq!((p[1].input_per_mtok, p[1].output_per_mtok, p[1].valid_to), (1.0, 8.0, None));
        assert_eq!(p[2].valid_from, now());
    }

    #[test]
    fn a_bad_price_row_is_named_with_its_line_and_field() {
        let head = "model,input_per_mtok,output_per_mtok,currency,valid_from,valid_to,source\n";
        let bad = |row: &str| parse_prices_csv(&format!("{head}m,1,2,USD,,,s\n{row}\n"), now()).unwrap_err().0;
        assert_eq!(bad("m,-1,2,USD,,,s"), "line 3: input_per_mtok must be a finite number of at least 0, not -1");
        assert_eq!(bad("m,1,two,USD,,,s"), "line 3: output_per_mtok \"two\" is not a number");
        assert!(bad("m,1,2,usd,,,s").starts_with("line 3: currency \"usd\""));
        assert!(bad("m,1,2,USD,2026-02-01,2026-01-01,s").starts_with("line 3: valid_to"));
        assert!(bad("m,1,2,USD,yesterday,,s").starts_with("line 3: valid_from \"yesterday\" is not a date"));
        assert!(bad("m,1,2,USD,,,").starts_with("line 3: source is required"));
        assert_eq!(bad("m,1,2"), "line 3: 3 fields, expected 7");
        let header = parse_prices_csv("model,price\nm,1\n", now()).unwrap_err().0;
        assert!(header.starts_with("line 1: the header must be model,input_per_mtok,"), "{header}");
    }

    #[test]
    fn weights_reject_repeats_negatives_and_an_all_zero_set() {
        let w = parse_weights_csv("category,weight\nlaw,3\nmath,1.5\n").unwrap();
        assert_eq!(w, vec![("law".to_owned(), 3.0), ("math".to_owned(), 1.5)]);
        let err = |t: &str| parse_weights_csv(t).unwrap_err().0;
        assert_eq!(err("category,weight\nlaw,3\nlaw,1\n"), "line 3: category \"law\" was already given on line 2");
        assert!(err("category,weight\nlaw,-1\n").starts_with("line 2: weight must be"));
        assert!(err("category,weight\nlaw,NaN\n").starts_with("line 2: weight must be"));
        assert_eq!(err("category,weight\n,1\n"), "line 2: category is empty");
        assert_eq!(err("category,weight\nlaw,0\n"), "the weights sum to zero: nothing would be weighted");
        assert_eq!(err("category,weight\n"), "the weights file has no rows");
    }

    #[test]
    fn an_electricity_price_reads_per_kwh() {
        assert_eq!(parse_per_kwh("0.30/kWh").unwrap(), 0.30);
        assert_eq!(parse_per_kwh(" 0.25 /kwh ").unwrap(), 0.25);
        assert_eq!(parse_per_kwh("0.2").unwrap(), 0.2);
        assert!(parse_per_kwh("0.30/MWh").unwrap_err().0.contains("only a price per kWh"));
        assert!(parse_per_kwh("cheap").unwrap_err().0.contains("is not a number"));
        assert!(parse_per_kwh("-1/kWh").unwrap_err().0.contains("at least 0"));
    }
}
