use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn v2_inet(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut block = src.to_vec();
    block.extend_from_slice(&[127, 0, 0, 1]);
    block.extend_from_slice(&sport.to_be_bytes());
    block.extend_from_slice(&8443u16.to_be_bytes());
    v2(0x21, 0x11, &block)
}

fn complete(buf: &[u8]) -> ProxyHeader {
    match parse(buf) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{other:?} for {buf:?}"),
    }
}

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn v1_lines_carry_the_source_and_stop_at_crlf() {
    let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8443\r\n";
    let mut with_hello = line.to_vec();
    with_hello.extend_from_slice(&[0x16, 0x03, 0x01]);
    let h = complete(&with_hello);
    assert_eq!(h.len, line.len());
    assert_eq!(h.source, addr("192.0.2.7:51000"));
    let h = complete(b"PROXY TCP6 2001:db8::7 ::1 0 443\r\n");
    assert_eq!(h.source, addr("[2001:db8::7]:0"));
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n",
    ] {
        assert_eq!(complete(unknown).source, None);
        assert_eq!(complete(unknown).len, unknown.len());
    }
}

#[test]
fn v1_is_parsed_strictly() {
    for bad in [
        &b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8443\n"[..],
        b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8443 \r\n",
        b"PROXY TCP4  192.0.2.7 127.0.0.1 51000 8443\r\n",
        b"PROXY tcp4 192.0.2.7 127.0.0.1 51000 8443\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 051000 8443\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 8443\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 +1 8443\r\n",
        b"PROXY TCP4 192.0.2.007 127.0.0.1 1 8443\r\n",
        b"PROXY TCP4 2001:db8::7 127.0.0.1 1 8443\r\n",
        b"PROXY TCP6 192.0.2.7 ::1 1 8443\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n",
        b"PROXY \r\n",
    ] {
        assert_eq!(parse(bad), Err(HeaderError::MalformedV1), "{bad:?}");
    }
    assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"PROXZ"), Err(HeaderError::NotProxy));
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 120]].concat();
    assert_eq!(parse(&long), Err(HeaderError::TooLongV1));
    assert_eq!(parse(&long[..V1_MAX - 1]), Ok(Parsed::Incomplete));
}

#[test]
fn v2_proxy_local_and_tlvs() {
    let h = v2_inet([192, 0, 2, 7], 51000);
    let mut with_hello = h.clone();
    with_hello.extend_from_slice(&[0x16, 0x03, 0x01]);
    assert_eq!(
        complete(&with_hello),
        ProxyHeader {
            len: h.len(),
            source: addr("192.0.2.7:51000")
        }
    );
    let mut block = [0u8; 36];
    block[..16].copy_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    block[32..34].copy_from_slice(&443u16.to_be_bytes());
    assert_eq!(
        complete(&v2(0x21, 0x21, &block)).source,
        addr("[2001:db8::7]:443")
    );
    // TLVs after the addresses are skipped.
    let mut tlvs = h[16..].to_vec();
    tlvs.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']);
    let with_tlvs = v2(0x21, 0x11, &tlvs);
    assert_eq!(complete(&with_tlvs).len, with_tlvs.len());
    // LOCAL (a health check): no source, whatever the block holds.
    assert_eq!(complete(&v2(0x20, 0x00, &[])).source, None);
    assert_eq!(complete(&v2(0x20, 0x11, &h[16..])).source, None);
    assert_eq!(complete(&v2(0x21, 0x00, &[])).source, None);
}

#[test]
fn v2_is_parsed_strictly_and_bounded() {
    let good = v2_inet([192, 0, 2, 7], 1);
    let mut version1 = good.clone();
    version1[12] = 0x11;
    let mut command = good.clone();
    command[12] = 0x22;
    let mut udp = good.clone();
    udp[13] = 0x12;
    let mut family = good.clone();
    family[13] = 0x41;
    for bad in [version1, command, udp, family, v2(0x21, 0x11, &[0; 11])] {
        assert_eq!(parse(&bad), Err(HeaderError::MalformedV2), "{bad:?}");
    }
    // A wrong command byte is refused before the length arrives.
    assert_eq!(parse(&command_prefix()), Err(HeaderError::MalformedV2));
    let over = v2(0x21, 0x11, &vec![0; V2_MAX - 16 + 1]);
    assert_eq!(parse(&over[..16]), Err(HeaderError::TooLongV2));
    let at_cap = v2(0x21, 0x11, &vec![0; V2_MAX - 16]);
    assert_eq!(complete(&at_cap).len, V2_MAX);
    assert_eq!(
        HeaderError::TooLongV2.to_string(),
        format!("PROXY v2 header longer than {V2_MAX} bytes")
    );
    assert!(HeaderError::TooLongV2.is_oversized());
    assert!(!HeaderError::MalformedV2.is_oversized());
}

fn command_prefix() -> Vec<u8> {
    let mut p = V2_SIGNATURE.to_vec();
    p.push(0x31);
    p
}

fn header() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
            let source = SocketAddr::new(IpAddr::from(ip), port);
            let line = format!("PROXY TCP4 {} 127.0.0.1 {port} 8443\r\n", source.ip());
            (line.into_bytes(), Some(source))
        }),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            let source = SocketAddr::new(IpAddr::from(ip), port);
            let line = format!("PROXY TCP6 {} ::1 {port} 8443\r\n", source.ip());
            (line.into_bytes(), Some(source))
        }),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
            (
                v2_inet(ip, port),
                Some(SocketAddr::new(IpAddr::from(ip), port)),
            )
        }),
        Just((v2(0x20, 0x00, &[]), None)),
    ]
}

proptest! {
    /// Every header is found whole with what follows untouched, however the bytes arrive:
    /// each cut before its end asks for more.
    #[test]
    fn headers_are_found_at_any_split(
        (h, source) in header(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        for cut in 0..h.len() {
            prop_assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete));
        }
        let mut stream = h.clone();
        stream.extend_from_slice(&tail);
        prop_assert_eq!(parse(&stream), Ok(Parsed::Complete(ProxyHeader { len: h.len(), source })));
    }

    /// Arbitrary bytes: no panic, and a complete header never claims more than was read or
    /// more than the bound.
    #[test]
    fn arbitrary_bytes_are_bounded(
        start in prop_oneof![Just(b"PROXY ".to_vec()), Just(V2_SIGNATURE.to_vec()), Just(Vec::new())],
        rest in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        let buf = [start, rest].concat();
        if let Ok(Parsed::Complete(h)) = parse(&buf) {
            prop_assert!(h.len <= buf.len() && h.len <= MAX_HEADER);
        }
        if buf.len() >= MAX_HEADER {
            prop_assert_ne!(parse(&buf), Ok(Parsed::Incomplete));
        }
    }
}
