//! Numbers with check rules: payment cards (Luhn), US SSNs (area/group/serial) and IBANs
//! (mod-97 and per-country length).

use crate::dlp::window::{Scan, Window};

/// A maximal run of digits joined by single spaces or dashes, e.g. `4111 1111 1111 1111`.
struct DigitRun {
    end: usize,
    digits: [u8; 19],
    len: usize,
    groups: [u8; 19],
    ngroups: usize,
    /// The separators used: bit 0 for space, bit 1 for dash.
    seps: u8,
}

impl DigitRun {
    fn digits(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    fn groups(&self) -> &[u8] {
        &self.groups[..self.ngroups]
    }
}

fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'-'
}

/// The digit run starting at `p`, if `p` starts one (not inside a longer run or word) and it
/// has at most 19 digits and ends a word.
fn digit_run(w: &Window<'_>, p: usize) -> Scan<Option<DigitRun>> {
    if !may_start_run(w, p) {
        return Ok(None);
    }
    let mut run = DigitRun {
        end: p,
        digits: [0; 19],
        len: 0,
        groups: [0; 19],
        ngroups: 0,
        seps: 0,
    };
    let mut i = p;
    let mut group = 0u8;
    loop {
        match w.at(i)? {
            Some(b) if b.is_ascii_digit() => {
                if run.len == run.digits.len() {
                    return Ok(None);
                }
                run.digits[run.len] = b - b'0';
                run.len += 1;
                group += 1;
                i += 1;
            }
            Some(s)
                if is_sep(s) && group > 0 && w.at(i + 1)?.is_some_and(|b| b.is_ascii_digit()) =>
            {
                run.groups[run.ngroups] = group;
                run.ngroups += 1;
                group = 0;
                run.seps |= if s == b' ' { 1 } else { 2 };
                i += 1;
            }
            _ => break,
        }
    }
    if group == 0 || !w.word_end(i)? {
        return Ok(None);
    }
    run.groups[run.ngroups] = group;
    run.ngroups += 1;
    run.end = i;
    Ok(Some(run))
}

/// Whether a digit run may start at `p`: a word starts there, not inside a longer run.
fn may_start_run(w: &Window<'_>, p: usize) -> bool {
    w.word_start(p)
        && !(w.before(p, 1).is_some_and(is_sep)
            && w.before(p, 2).is_some_and(|b| b.is_ascii_digit()))
}

/// The digits from `p` (counted up to `cap + 1`) and the byte after them when there are at
/// most `cap`: the cheap test that rules out most numbers (ports, octets, counts) before their
/// whole run is read. It reads no byte [`digit_run`] would not.
fn first_group(w: &Window<'_>, p: usize, cap: usize) -> Scan<(usize, Option<u8>)> {
    let n = w.run(p, cap, |b| b.is_ascii_digit())?;
    let after = if n <= cap { w.at(p + n)? } else { None };
    Ok((n, after))
}

/// Payment card number: 13–19 digits, whole or in groups (first of 4, others of 3–6, one kind
/// of separator), leading digit 2–6 (Mastercard, Visa, Amex, Discover…), Luhn-valid.
pub(super) fn card(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if !may_start_run(w, p) {
        return Ok(None);
    }
    // Whole, 13 digits or more; grouped, a first group of four and a separator.
    let (first, after) = first_group(w, p, 12)?;
    if first <= 12 && !(first == 4 && after.is_some_and(is_sep)) {
        return Ok(None);
    }
    card_in_full(w, p)
}

/// [`card`] without the cheap first test.
pub(super) fn card_in_full(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let Some(run) = digit_run(w, p)? else {
        return Ok(None);
    };
    let digits = run.digits();
    let groups = run.groups();
    let shape_ok = (13..=19).contains(&digits.len())
        && (groups.len() == 1
            || (groups.len() <= 5
                && groups[0] == 4
                && groups[1..].iter().all(|g| (3..=6).contains(g))
                && run.seps != 3));
    let iin_ok = digits.first().is_some_and(|d| (2..=6).contains(d));
    Ok((shape_ok && iin_ok && luhn_ok(digits)).then_some(run.end))
}

/// Whether `digits` (values 0–9) pass the Luhn check.
pub(crate) fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// US SSN `AAA-GG-SSSS`: area not 000, 666 or 900–999, group not 00, serial not 0000.
pub(super) fn ssn(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if !may_start_run(w, p) || first_group(w, p, 3)? != (3, Some(b'-')) {
        return Ok(None);
    }
    ssn_in_full(w, p)
}

/// [`ssn`] without the cheap first test.
pub(super) fn ssn_in_full(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let Some(run) = digit_run(w, p)? else {
        return Ok(None);
    };
    if run.groups() != [3, 2, 4] || run.seps != 2 {
        return Ok(None);
    }
    let d = run.digits();
    let num = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let area = num(0..3);
    let ok = area != 0 && area != 666 && area < 900 && num(3..5) != 0 && num(5..9) != 0;
    Ok(ok.then_some(run.end))
}

fn is_iban_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// IBAN: country, check digits, BBAN; compact or in groups of four separated by single spaces;
/// the country's length (15–34 for countries not in the table) and mod-97 remainder 1.
pub(super) fn iban(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let mut chars = [0u8; 34];
    for (k, c) in chars.iter_mut().take(4).enumerate() {
        let want: fn(u8) -> bool = if k < 2 {
            |b| b.is_ascii_uppercase()
        } else {
            |b| b.is_ascii_digit()
        };
        match w.at(p + k)? {
            Some(b) if want(b) => *c = b,
            _ => return Ok(None),
        }
    }
    if !w.word_start(p) {
        return Ok(None);
    }
    let expected = country_length([chars[0], chars[1]]);
    let mut n = 4;
    let mut i = p + 4;
    if w.at(i)? == Some(b' ') {
        // Grouped: " XXXX" repeated, the last group may be shorter.
        while expected != Some(n) && w.at(i)? == Some(b' ') {
            let g = w.run(i + 1, 4, is_iban_char)?;
            if g == 0 {
                break;
            }
            if g > 4 || n + g > chars.len() {
                return Ok(None);
            }
            for k in 0..g {
                chars[n + k] = w.at(i + 1 + k)?.unwrap_or(0);
            }
            n += g;
            i += 1 + g;
            if g < 4 {
                break;
            }
        }
    } else {
        let g = w.run(i, chars.len() - 4, is_iban_char)?;
        if g > chars.len() - 4 {
            return Ok(None);
        }
        for k in 0..g {
            chars[n + k] = w.at(i + k)?.unwrap_or(0);
        }
        n += g;
        i += g;
    }
    let length_ok = match expected {
        Some(len) => n == len,
        None => (15..=34).contains(&n),
    };
    Ok((length_ok && w.word_end(i)? && iban_checksum_ok(&chars[..n])).then_some(i))
}

/// Whether a compact IBAN's mod-97 remainder is 1 (ISO 13616).
pub(crate) fn iban_checksum_ok(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem = 0u32;
    for &b in tail.iter().chain(head) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// IBAN lengths of the SEPA countries and other common registrations.
fn country_length(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" => 22,
        b"AE" | b"GI" | b"IL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" => 31,
        _ => return None,
    })
}
