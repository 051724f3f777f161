//! Every message round-trips through encode and decode; framing handles partial input; and
//! malformed input is an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use belay_pg::codec::{
    read_frame, Backend, Close, Describe, Error, ErrorFields, Frame, Frontend, Severity, Startup,
    Target, TransactionStatus, DEFAULT_MAX_MESSAGE,
};
use bytes::{Bytes, BytesMut};

fn frontend_round_trip(m: Frontend) {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    let frame = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(Frontend::decode(&frame).unwrap(), m);
}

fn backend_round_trip(m: Backend) {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    let frame = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(Backend::decode(&frame).unwrap(), m);
}

#[test]
fn frontend_messages_round_trip() {
    for m in [
        Frontend::Query("SELECT 1; DELETE FROM t".into()),
        Frontend::Parse {
            name: "s1".into(),
            query: "DELETE FROM t WHERE id = $1".into(),
            param_types: vec![23, 0],
        },
        Frontend::Bind {
            portal: "".into(),
            statement: "s1".into(),
            param_formats: vec![0, 1],
            params: vec![Some(Bytes::from_static(b"42")), None, Some(Bytes::new())],
            result_formats: vec![1],
        },
        Frontend::Describe(Describe {
            target: Target::Statement,
            name: "s1".into(),
        }),
        Frontend::Describe(Describe {
            target: Target::Portal,
            name: "".into(),
        }),
        Frontend::Execute {
            portal: "p".into(),
            max_rows: 100,
        },
        Frontend::Close(Close {
            target: Target::Statement,
            name: "s1".into(),
        }),
        Frontend::Sync,
        Frontend::Flush,
        Frontend::Terminate,
        Frontend::CopyData(Bytes::from_static(b"1\tabc\n")),
        Frontend::CopyDone,
        Frontend::CopyFail("client gave up".into()),
        Frontend::FunctionCall(Bytes::from_static(&[0, 0, 1, 2])),
        Frontend::Password(Bytes::from_static(b"SCRAM-SHA-256\0\0\0\0\x05n,,n=")),
    ] {
        frontend_round_trip(m);
    }
}

#[test]
fn backend_messages_round_trip() {
    let mut error = ErrorFields::new(Severity::Error, "42501", "belay denied the statement");
    error.detail = Some("class destructive".into());
    error.hint = Some("ask a human".into());
    error.other.push((b'P', "7".into()));
    for m in [
        Backend::AuthenticationOk,
        Backend::AuthenticationCleartextPassword,
        Backend::AuthenticationMd5Password([1, 2, 3, 4]),
        Backend::AuthenticationSasl(vec!["SCRAM-SHA-256".into()]),
        Backend::AuthenticationSaslContinue(Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096")),
        Backend::AuthenticationSaslFinal(Bytes::from_static(b"v=xyz")),
        Backend::BackendKeyData {
            pid: 4242,
            secret: Bytes::from_static(&[9, 9, 9, 9]),
        },
        Backend::ParameterStatus {
            name: "application_name".into(),
            value: "belay:ci-bot".into(),
        },
        Backend::ReadyForQuery(TransactionStatus::Idle),
        Backend::ReadyForQuery(TransactionStatus::InTransaction),
        Backend::ReadyForQuery(TransactionStatus::Failed),
        Backend::ErrorResponse(error.clone()),
        Backend::NoticeResponse(ErrorFields::new(
            Severity::Notice,
            "00000",
            "held for approval",
        )),
        Backend::CommandComplete("DELETE 42".into()),
        Backend::EmptyQueryResponse,
        Backend::ParseComplete,
        Backend::BindComplete,
        Backend::CloseComplete,
        Backend::NoData,
        Backend::PortalSuspended,
        Backend::CopyDone,
        Backend::Other(Frame {
            tag: b'D',
            body: Bytes::from_static(&[0, 1, 0, 0, 0, 1, b'x']),
        }),
        Backend::Other(Frame {
            tag: b'T',
            body: Bytes::from_static(&[0, 0]),
        }),
    ] {
        backend_round_trip(m);
    }
}

#[test]
fn startup_messages_round_trip() {
    for m in [
        Startup::Startup {
            params: vec![
                ("user".into(), "ci-bot".into()),
                ("database".into(), "staging".into()),
            ],
        },
        Startup::SslRequest,
        Startup::GssEncRequest,
        Startup::Cancel {
            pid: 7,
            secret: vec![1, 2, 3, 4],
        },
    ] {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let decoded = Startup::read(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(decoded, m);
    }
}

#[test]
fn frames_arrive_in_pieces() {
    let mut whole = BytesMut::new();
    Frontend::Query("SELECT 1".into()).encode(&mut whole);
    Frontend::Sync.encode(&mut whole);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in whole.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(f) = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap() {
            frames.push(Frontend::decode(&f).unwrap());
        }
    }
    assert_eq!(frames, [Frontend::Query("SELECT 1".into()), Frontend::Sync]);
}

#[test]
fn malformed_input_is_an_error() {
    let cases: Vec<(&[u8], &str)> = vec![
        (&[b'Q', 0, 0, 0, 3], "length below 4"),
        (&[b'Q', 0, 0, 0, 5, b'x'], "string without terminator"),
        (&[b'P', 0, 0, 0, 8, 0, 0, 0xff, 0xff], "negative count"),
        (&[b'?', 0, 0, 0, 4], "unknown tag"),
        (&[b'S', 0, 0, 0, 5, 1], "trailing bytes"),
        (&[b'D', 0, 0, 0, 6, b'Z', 0], "bad target"),
    ];
    for (bytes, why) in cases {
        let mut buf = BytesMut::from(bytes);
        let result = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).and_then(|f| match f {
            Some(f) => Frontend::decode(&f).map(|_| ()),
            None => Ok(()),
        });
        assert!(result.is_err(), "{why}: {result:?}");
    }
    let mut huge = BytesMut::from(&[b'Q', 0x7f, 0, 0, 0][..]);
    assert!(matches!(
        read_frame(&mut huge, 1024),
        Err(Error::TooLong(..))
    ));
    let mut bad_startup = BytesMut::from(&[0, 0, 0, 8, 0, 2, 0, 0][..]);
    assert_eq!(Startup::read(&mut bad_startup), Err(Error::Protocol(2, 0)));
    let mut huge_startup = BytesMut::from(&[0, 1, 0, 0, 0, 3, 0, 0][..]);
    assert!(Startup::read(&mut huge_startup).is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic sweep of short byte strings through every decoder.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 24) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (seed >> ((i % 8) * 8)) as u8).collect();
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(frame)) = read_frame(&mut buf, DEFAULT_MAX_MESSAGE) {
            let _ = Frontend::decode(&frame);
            let _ = Backend::decode(&frame);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = Startup::read(&mut buf);
    }
}

/// The parameter section of a Bind, as the relay keeps it.
fn bind_parameters(formats: Vec<i16>, params: Vec<Option<Bytes>>) -> belay_pg::Parameters {
    let mut buf = BytesMut::new();
    Frontend::Bind {
        portal: "p".into(),
        statement: "s".into(),
        param_formats: formats,
        params,
        result_formats: vec![1],
    }
    .encode(&mut buf);
    let frame = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
    // After the portal and statement names: "p\0s\0".
    belay_pg::Parameters::from_bind(frame.body.slice(4..))
}

#[test]
fn bound_parameters_have_one_canonical_text() {
    let text = |s: &str| Some(Bytes::from(s.to_owned()));
    assert_eq!(bind_parameters(vec![], vec![]).canonical(), Ok(None));
    assert_eq!(belay_pg::Parameters::default().canonical(), Ok(None));
    assert_eq!(
        bind_parameters(vec![], vec![text("42"), None, text("it's")]).canonical(),
        Ok(Some("$1 = '42', $2 = NULL, $3 = 'it''s'".to_owned()))
    );
    // One format code applies to all; several apply one each.
    assert_eq!(
        bind_parameters(vec![1], vec![Some(Bytes::from_static(&[0, 0, 0, 7]))]).canonical(),
        Ok(Some("$1 = x'00000007'".to_owned()))
    );
    assert_eq!(
        bind_parameters(vec![0, 1], vec![text("a"), text("b")]).canonical(),
        Ok(Some(
            "$1 = 'a', $2 = x'62' (binary; reads as 'b')".to_owned()
        ))
    );
    // The same bytes as text and as binary are different actions.
    assert_ne!(
        bind_parameters(vec![0], vec![text("7")]).canonical(),
        bind_parameters(vec![1], vec![text("7")]).canonical()
    );
    // Result formats do not change the action.
    let mut buf = BytesMut::new();
    Frontend::Bind {
        portal: "p".into(),
        statement: "s".into(),
        param_formats: vec![],
        params: vec![text("42")],
        result_formats: vec![],
    }
    .encode(&mut buf);
    let frame = read_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
    assert_eq!(
        belay_pg::Parameters::from_bind(frame.body.slice(4..)).canonical(),
        bind_parameters(vec![], vec![text("42")]).canonical()
    );
}

#[test]
fn malformed_bound_parameters_are_an_error() {
    for body in [
        &[0u8][..],
        &[0, 0, 0, 1, 0, 0, 0, 9, b'x'][..],
        &[0xff, 0xff][..],
        &[0, 2, 0][..],
    ] {
        let p = belay_pg::Parameters::from_bind(Bytes::copy_from_slice(body));
        assert!(p.canonical().is_err(), "{body:?}");
    }
}
