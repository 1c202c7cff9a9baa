//! A private SoftHSM2 for one test binary: a temp token directory, a softhsm2.conf pointing at
//! it (SOFTHSM2_CONF, set once for the process before any PKCS#11 call), and tokens initialised
//! with `softhsm2-util`. Tests in a binary share the process, so every token is made up front.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "5678";
/// Environment variable holding the user PIN (for `pin_env` configs).
pub const PIN_ENV: &str = "PORTCULLIS_TEST_HSM_PIN";
/// Tokens: the issuing token, a separate root token, one only ever given a wrong PIN, one whose
/// login the recovery test breaks on purpose, one per key-generating backend test, and a
/// second region's issuing token.
/// Key generation gets its own token because SoftHSM2 2.6.1 was seen to fail a generation
/// (CKR_GENERAL_ERROR, ~1 run in 20) while other sessions of the same token were busy.
pub const TOKENS: &[&str] = &[
    "ca",
    "root",
    "wrong-pin",
    "recovery",
    "attrs",
    "p384",
    "threads",
    "region",
];

pub struct Hsm {
    pub dir: PathBuf,
    pub pin_file: PathBuf,
}

/// The test SoftHSM, or None (with a loud message) when SoftHSM2 is not installed.
pub fn hsm() -> Option<&'static Hsm> {
    static HSM: OnceLock<Option<Hsm>> = OnceLock::new();
    HSM.get_or_init(|| {
        if !Path::new(MODULE).exists() {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 SKIPPING PKCS#11 TESTS: {MODULE} is missing (apt-get install softhsm2)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("portcullis-softhsm-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        // Set once, before any PKCS#11 module is loaded in this process.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var(PIN_ENV, PIN);
        for label in TOKENS {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("run softhsm2-util");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).expect("pin file");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Some(Hsm { dir, pin_file })
    })
    .as_ref()
}

/// Skips the calling test (returns) when SoftHSM2 is not installed.
#[macro_export]
macro_rules! require_hsm {
    () => {
        match $crate::softhsm::hsm() {
            Some(hsm) => hsm,
            None => return,
        }
    };
}

/// A session opened directly through cryptoki, independent of the backend under test.
pub fn raw_session(token: &str) -> Session {
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token)
        .expect("token");
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    session
}
