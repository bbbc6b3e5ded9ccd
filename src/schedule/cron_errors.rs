//! Cron errors in the library's words: which field is wrong, its value and its range
//! ("minute 61 is out of range 0–59"), or which macro is unknown — instead of the parser's
//! own text ("Component error: Number out of bounds").
//!
//! Parsing stays croner's: the culprit is found by asking croner about each field alone (in
//! an expression whose other fields are `*`), then about each item of that field's list. Only
//! the numbers of the item found are read here, to name the one out of range.

use croner::parser::{CronParser, Seconds, Year};

/// The macros croner knows (case-insensitive).
pub(crate) const MACROS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// One field of a crontab line: its name, range and what else it accepts.
struct Field {
    name: &'static str,
    low: u32,
    high: u32,
    names: &'static str,
}

const SECOND: Field = Field {
    name: "second",
    low: 0,
    high: 59,
    names: "",
};

const FIVE: [Field; 5] = [
    Field {
        name: "minute",
        low: 0,
        high: 59,
        names: "",
    },
    Field {
        name: "hour",
        low: 0,
        high: 23,
        names: "",
    },
    Field {
        name: "day of month",
        low: 1,
        high: 31,
        names: ", L (last day) and W (nearest weekday)",
    },
    Field {
        name: "month",
        low: 1,
        high: 12,
        names: " and names JAN–DEC",
    },
    Field {
        name: "day of week",
        low: 0,
        high: 7,
        names: " (0 and 7 are Sunday), names SUN–SAT, L (last) and # (nth)",
    },
];

fn parses(expr: &str) -> bool {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .is_ok()
}

/// Why `expr`, which croner refused with `detail`, is not a cron expression.
pub(crate) fn explain(expr: &str, detail: &str) -> String {
    let expr = expr.trim();
    if expr.is_empty() {
        return "the cron expression is empty; give 5 fields (minute hour day-of-month month \
                day-of-week), for example \"0 6 * * *\""
            .to_string();
    }
    if expr.starts_with('@') {
        return format!("{expr} is not a known macro; known: {}", MACROS.join(", "));
    }
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let fields: Vec<&Field> = match parts.len() {
        5 => FIVE.iter().collect(),
        6 => std::iter::once(&SECOND).chain(FIVE.iter()).collect(),
        n => {
            return format!(
                "the cron expression {expr:?} has {n} field(s); it needs 5 (minute hour \
                 day-of-month month day-of-week), or 6 with a leading seconds field"
            );
        }
    };
    for (i, (part, field)) in parts.iter().zip(&fields).enumerate() {
        let probe = |value: &str| {
            let mut probe: Vec<&str> = vec!["*"; parts.len()];
            probe[i] = value;
            parses(&probe.join(" "))
        };
        if probe(part) {
            continue;
        }
        let item = part.split(',').find(|item| !probe(item)).unwrap_or(part);
        return explain_item(expr, field, item);
    }
    // Each field is fine alone; croner refused the combination.
    format!("invalid cron expression {expr:?}: {detail}")
}

/// Why `item`, one list item of `field`, is refused.
fn explain_item(expr: &str, field: &Field, item: &str) -> String {
    // The values are before a `/` (what follows is a step); a range has two.
    let values = item.split('/').next().unwrap_or(item);
    let out_of_range = values
        .split('-')
        .filter_map(|n| n.parse::<u64>().ok())
        .find(|n| *n < u64::from(field.low) || *n > u64::from(field.high));
    let name = field.name;
    let (low, high) = (field.low, field.high);
    match out_of_range {
        Some(n) => format!("{name} {n} is out of range {low}–{high} in cron expression {expr:?}"),
        None => format!(
            "{name} `{item}` is not valid in cron expression {expr:?}: a {name} is a number \
             {low}–{high}{names}, `*`, a range (1-5), a step (*/15) or a list of them (1,15)",
            names = field.names
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(expr: &str) -> String {
        assert!(!parses(expr), "{expr} parses");
        explain(expr, "croner's text")
    }

    #[test]
    fn a_number_out_of_range_is_named_with_its_field_and_range() {
        assert_eq!(
            why("61 * * * *"),
            "minute 61 is out of range 0–59 in cron expression \"61 * * * *\""
        );
        assert!(why("0 24 * * *").starts_with("hour 24 is out of range 0–23"));
        assert!(why("0 0 32 * *").starts_with("day of month 32 is out of range 1–31"));
        assert!(why("0 0 0 * *").starts_with("day of month 0 is out of range 1–31"));
        assert!(why("0 0 * 13 *").starts_with("month 13 is out of range 1–12"));
        assert!(why("0 0 * * 8").starts_with("day of week 8 is out of range 0–7"));
        // In a list, a range, or before a step.
        assert!(why("1,2,99 * * * *").starts_with("minute 99 is out of range 0–59"));
        assert!(why("0 5-25 * * *").starts_with("hour 25 is out of range 0–23"));
        assert!(why("70/5 * * * *").starts_with("minute 70 is out of range 0–59"));
        // With a seconds field.
        assert!(why("60 0 * * * *").starts_with("second 60 is out of range 0–59"));
    }

    #[test]
    fn other_bad_values_say_what_the_field_accepts() {
        let m = why("0 0 * FOO *");
        assert!(m.starts_with("month `FOO` is not valid"), "{m}");
        assert!(m.contains("names JAN–DEC"), "{m}");
        let m = why("0 0 * * MONDAY");
        assert!(m.starts_with("day of week `MONDAY` is not valid"), "{m}");
        let m = why("x * * * *");
        assert!(m.starts_with("minute `x` is not valid"), "{m}");
    }

    #[test]
    fn unknown_macros_list_the_known_ones() {
        assert_eq!(
            why("@fortnightly"),
            "@fortnightly is not a known macro; known: @yearly, @annually, @monthly, @weekly, \
             @daily, @hourly"
        );
        for known in MACROS {
            assert!(parses(known), "{known}");
        }
    }

    #[test]
    fn a_wrong_number_of_fields_says_how_many_are_needed() {
        let m = why("* * *");
        assert!(m.contains("has 3 field(s); it needs 5"), "{m}");
        assert!(why("").starts_with("the cron expression is empty"));
    }
}
