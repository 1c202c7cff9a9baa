use super::*;

fn view(body: &[u8], cut: usize) -> Result<(Vec<u8>, usize), Problem> {
    let mut m = Multipart::new("XyZ", 0, false);
    let mut out = ViewOut::default();
    m.feed(&body[..cut], &mut out)?;
    m.feed(&body[cut..], &mut out)?;
    m.finish(&mut out)?;
    let accounted = out.source_len();
    Ok((out.view, accounted))
}

const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nplain \\u0031\r\n\
--XyZ\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nMTIzLTQ1\r\nLTY3ODk=\r\n\
--XyZ\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n4111=20=\r\n1111\r\n\
--XyZ\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\nContent-Transfer-Encoding: base64\r\n\r\nOTk5\r\n--in--\r\n\
--XyZ--\r\nepilogue";

#[test]
fn each_part_is_read_with_its_own_headers_however_the_body_is_cut() {
    let whole = view(BODY, 0).unwrap();
    let text = String::from_utf8(whole.0.clone()).unwrap();
    assert!(text.contains("plain 1\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\n123-45-6789\nMTIzLTQ1\r\nLTY3ODk=\r\n--XyZ"),
        "{text}"
    );
    assert!(text.contains("\r\n\r\n4111 1111\r\n--XyZ"), "{text}");
    assert!(text.contains("\r\n\r\n999\nOTk5\r\n--in--"), "{text}");
    assert!(text.ends_with("--XyZ--\r\nepilogue"));
    assert_eq!(whole.1, BODY.len());
    for cut in 0..BODY.len() {
        assert_eq!(view(BODY, cut).unwrap(), whole, "cut at {cut}");
    }
}

#[test]
fn ambiguous_parts_are_refused() {
    let dup = b"--XyZ\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\nx\r\n--XyZ--";
    assert!(matches!(view(dup, 3), Err(Problem::DuplicatePartHeader)));
    let unknown = b"--XyZ\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nx\r\n--XyZ--";
    assert!(matches!(view(unknown, 3), Err(Problem::UnknownEncoding)));
    let long = b"--XyZ-not-the-boundary\r\n\r\nx\r\n--XyZ--";
    assert!(matches!(view(long, 3), Err(Problem::Malformed(_))));
    let folded = b"--XyZ\r\nContent-Type: a/b\r\n\tc\r\n\r\nx\r\n--XyZ--";
    assert!(matches!(view(folded, 3), Err(Problem::Malformed(_))));
}

#[test]
fn boundaries_come_from_the_content_type() {
    assert_eq!(
        boundary("multipart/form-data; boundary=\"a b\"").as_deref(),
        Some("a b")
    );
    assert_eq!(
        boundary("Multipart/Mixed;Boundary=xyz").as_deref(),
        Some("xyz")
    );
    assert_eq!(boundary("multipart/form-data"), None);
    assert_eq!(boundary("text/plain; boundary=x"), None);
}
