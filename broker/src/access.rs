//! Access control of the REST API, as EMQX 5.1 does it: dashboard users who log in for a
//! bearer token, and API keys that scripts present with HTTP Basic.
//!
//! - **Users** (`POST /api/v5/login`, `/api/v5/users`): a password, stored as an argon2id PHC
//!   string. A login returns a random bearer token, kept in memory only, that expires
//!   `dashboard.token_expired_time` after the login (a restart logs everyone out).
//! - **API keys** (`/api/v5/api_key`): a name, a generated `api_key` and `api_secret` (the
//!   secret is shown once, when the key is created, and stored as an argon2id PHC string), a
//!   description, an `enable` flag and an optional expiry. A call authenticates with
//!   `Authorization: Basic base64(api_key:api_secret)`.
//! - [`authorize`] is the middleware of every protected route: a valid bearer token or API key,
//!   or `401` with `{"code", "message"}` and a `WWW-Authenticate` header.
//!
//! Both lists live in `node.data_dir/dashboard/`: `users.json` and `api_keys.json`, each
//! rewritten whole on a change (temporary file, fsync, rename, fsync of the directory; mode
//! 0600). There is no default password: when no user exists, [`Access::open`] creates
//! `dashboard.default_username` with a random password and writes that password to
//! `dashboard/initial_admin_password` (mode 0600), which is removed once the password it
//! holds is changed. `broker admin passwd` ([`set_password`]) sets a password offline; a
//! running broker notices the changed `users.json` (inode, size, modification time) at its
//! next login or bearer-token check and re-reads it, ending the sessions of users whose
//! password changed.
//!
//! Argon2 is slow on purpose (the crate's defaults: 19 MiB, 2 passes). It runs on tokio's
//! blocking pool, at most [`HASHING`] at a time, so a flood of logins neither stalls the
//! control plane nor exhausts memory. A secret verified once is remembered as an HMAC-SHA-256
//! under a key drawn at start (never written anywhere), so a script making many calls pays
//! argon2 once; every call still checks that the key exists, is enabled and has not expired,
//! and a changed, disabled or deleted key is forgotten at once.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The directory under `node.data_dir`.
const DIR: &str = "dashboard";
/// The users, under [`DIR`].
const USERS_FILE: &str = "users.json";
/// The API keys, under [`DIR`].
const KEYS_FILE: &str = "api_keys.json";
/// The generated first password, under `dashboard/` in the data directory.
pub const INITIAL_PASSWORD_FILE: &str = "initial_admin_password";
/// Serializes read-modify-write cycles of `users.json` between a broker and `broker admin`.
const LOCK_FILE: &str = ".lock";

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted, in characters (argon2 hashes whatever it gets).
const MAX_PASSWORD_LEN: usize = 256;
/// Longest user or API key name.
const MAX_NAME_LEN: usize = 256;
/// Longest description.
const MAX_DESC_LEN: usize = 1024;
/// Most API keys, as in EMQX.
const MAX_API_KEYS: usize = 100;
/// Most dashboard users.
const MAX_USERS: usize = 100;
/// Most live tokens; a login beyond it ends the session that would expire first.
const MAX_TOKENS: usize = 10_000;
/// Argon2 computations at once.
pub const HASHING: usize = 2;
/// Longest wait for a turn to compute argon2.
const HASHING_WAIT: Duration = Duration::from_secs(10);
/// The EMQX version whose API shapes this follows (`POST /api/v5/login` reports it).
const EMQX_VERSION: &str = "5.1.0";
/// Longer than any session lasts (the cap of a `dashboard.token_expired_time` beyond the clock).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);
/// The realm of `WWW-Authenticate`.
const CHALLENGE: &str = "Basic realm=\"broker\", Bearer realm=\"broker\"";

/// What [`Access::open`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct AccessOptions {
    /// `dashboard.default_username`: the user created when none exists.
    pub default_username: String,
    /// `dashboard.token_expired_time`: how long a bearer token lives.
    pub token_ttl: Duration,
}

impl Default for AccessOptions {
    fn default() -> Self {
        Self {
            default_username: "admin".to_owned(),
            token_ttl: Duration::from_secs(3600),
        }
    }
}

/// What [`Access::open`] returns.
#[derive(Debug)]
pub struct Opened {
    /// The access control, for [`router`] and [`authorize`].
    pub access: Arc<Access>,
    /// When no user existed: the file holding the generated password of the user created.
    pub generated: Option<PathBuf>,
}

/// Who made an authorized request; [`authorize`] puts it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// A dashboard user, by bearer token.
    User {
        /// The user.
        username: String,
        /// SHA-256 of the token (which ends the session at logout).
        token: [u8; 32],
    },
    /// An API key, by HTTP Basic.
    ApiKey {
        /// The key's name.
        name: String,
    },
}

/// The users, API keys and sessions of the REST API. Cheap to share (`Arc`); every method takes
/// `&self`.
pub struct Access {
    dir: PathBuf,
    options: AccessOptions,
    clock: Clock,
    state: Mutex<Store>,
    hashing: tokio::sync::Semaphore,
    /// Keys the cache of verified API secrets; drawn at start, never stored.
    cache_key: ring::hmac::Key,
    /// A hash no password matches, verified for unknown usernames so that a failed login takes
    /// as long whether or not the user exists.
    decoy: OnceLock<String>,
}

/// The wall clock (replaced in tests).
type Clock = Box<dyn Fn() -> SystemTime + Send + Sync>;

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("Access")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("users", &st.users.len())
            .field("api_keys", &st.keys.len())
            .field("tokens", &st.tokens.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Store {
    users: Vec<User>,
    /// The `users.json` that `users` was read from or written as.
    users_stamp: Option<Stamp>,
    keys: Vec<ApiKey>,
    /// SHA-256 of each live token.
    tokens: HashMap<[u8; 32], Token>,
    /// API key → HMAC of the secret that verified against its hash.
    verified: HashMap<String, ring::hmac::Tag>,
}

struct Token {
    username: String,
    expires: SystemTime,
}

/// One dashboard user, as `users.json` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    username: String,
    /// Argon2id PHC string.
    password_hash: String,
    #[serde(default)]
    description: String,
}

#[derive(Serialize, Deserialize)]
struct UsersFile {
    users: Vec<User>,
}

/// One API key, as `api_keys.json` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ApiKey {
    name: String,
    api_key: String,
    /// Argon2id PHC string of the secret.
    secret_hash: String,
    #[serde(default)]
    desc: String,
    enable: bool,
    /// Unix seconds; `None` never expires.
    expired_at: Option<i64>,
    /// Unix seconds.
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct KeysFile {
    api_keys: Vec<ApiKey>,
}

/// Identifies one version of a file: rewriting it (a new inode by rename) changes this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = fs::metadata(path).ok()?;
        Some(Self {
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl Access {
    /// Opens (creating if needed) `data_dir/dashboard/`. When no user exists, creates
    /// `options.default_username` with a random password, written to
    /// `dashboard/initial_admin_password`, whose path is returned in [`Opened::generated`].
    pub fn open(data_dir: &Path, options: AccessOptions) -> io::Result<Opened> {
        Self::open_with_clock(data_dir, options, Box::new(SystemTime::now))
    }

    fn open_with_clock(
        data_dir: &Path,
        options: AccessOptions,
        clock: Clock,
    ) -> io::Result<Opened> {
        check_username(&options.default_username).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("dashboard.default_username: {e}"),
            )
        })?;
        let dir = data_dir.join(DIR);
        create_dir(&dir)?;
        let cache_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| io::Error::other("no randomness for the API key cache"))?;
        let mut generated = None;
        let (users, users_stamp) = {
            let _lock = FileLock::acquire(&dir)?;
            let mut users = read_users(&dir)?.unwrap_or_default();
            if users.is_empty() {
                let password = random_text(18)?;
                users.push(User {
                    username: options.default_username.clone(),
                    password_hash: hash(&password)?,
                    description: "administrator".to_owned(),
                });
                // The password first: a crash before the users file is written generates
                // another one at the next start.
                let path = dir.join(INITIAL_PASSWORD_FILE);
                write_atomic(&path, format!("{password}\n").as_bytes())?;
                write_users(&dir, &users)?;
                generated = Some(path);
            }
            (users, Stamp::of(&dir.join(USERS_FILE)))
        };
        let keys = read_keys(&dir)?;
        let access = Self {
            dir,
            options,
            clock,
            state: Mutex::new(Store {
                users,
                users_stamp,
                keys,
                ..Store::default()
            }),
            hashing: tokio::sync::Semaphore::new(HASHING),
            cache_key,
            decoy: OnceLock::new(),
        };
        Ok(Opened {
            access: Arc::new(access),
            generated,
        })
    }

    fn state(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    fn now_unix(&self) -> i64 {
        unix(self.now())
    }

    // --- users ---------------------------------------------------------------------------------

    /// Re-reads `users.json` if another process (`broker admin passwd`) replaced it, and ends
    /// the sessions of users whose password changed or who are gone.
    fn refresh_users(&self, st: &mut Store) {
        let path = self.dir.join(USERS_FILE);
        let stamp = Stamp::of(&path);
        if stamp == st.users_stamp {
            return;
        }
        st.users_stamp = stamp;
        match read_users(&self.dir) {
            Ok(Some(users)) => {
                log::info!("{} changed: re-read", path.display());
                let before = std::mem::replace(&mut st.users, users);
                end_stale_sessions(st, &before);
            }
            Ok(None) => log::warn!("{} is gone: keeping the users read before", path.display()),
            Err(e) => log::warn!("{e}: keeping the users read before"),
        }
    }

    /// Applies `f` to the users and writes them, under the file lock that `broker admin` takes
    /// too, after re-reading the file if it changed.
    fn update_users<T>(
        &self,
        f: impl FnOnce(&mut Vec<User>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _lock = FileLock::acquire(&self.dir)?;
        let mut st = self.state();
        self.refresh_users(&mut st);
        let mut users = st.users.clone();
        let out = f(&mut users)?;
        write_users(&self.dir, &users)?;
        st.users_stamp = Stamp::of(&self.dir.join(USERS_FILE));
        let before = std::mem::replace(&mut st.users, users);
        end_stale_sessions(&mut st, &before);
        Ok(out)
    }

    fn user_hash(&self, username: &str) -> Option<String> {
        let mut st = self.state();
        self.refresh_users(&mut st);
        st.users
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.password_hash.clone())
    }

    /// Checks a user's password (argon2: call from the blocking pool) and returns a new bearer
    /// token.
    fn login(&self, username: &str, password: &str) -> Result<String, ApiError> {
        let Some(phc) = self.user_hash(username) else {
            // As slow as a wrong password.
            if let Some(decoy) = self.decoy() {
                let _ = verify(password, decoy);
            }
            return Err(ApiError::login_failed());
        };
        if !verify(password, &phc) {
            return Err(ApiError::login_failed());
        }
        let token = random_text(32)?;
        let now = self.now();
        let mut st = self.state();
        self.refresh_users(&mut st);
        // The password may have changed while it was being checked.
        if !st
            .users
            .iter()
            .any(|u| u.username == username && u.password_hash == phc)
        {
            return Err(ApiError::login_failed());
        }
        st.tokens.retain(|_, t| t.expires > now);
        if st.tokens.len() >= MAX_TOKENS {
            let first = st
                .tokens
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(k, _)| *k);
            if let Some(k) = first {
                st.tokens.remove(&k);
            }
        }
        st.tokens.insert(
            digest(&token),
            Token {
                username: username.to_owned(),
                // A TTL too long for the clock is as good as forever.
                expires: now
                    .checked_add(self.options.token_ttl)
                    .unwrap_or(now + FOREVER),
            },
        );
        Ok(token)
    }

    fn decoy(&self) -> Option<&str> {
        if let Some(d) = self.decoy.get() {
            return Some(d);
        }
        let made = random_text(18).and_then(|p| hash(&p)).ok()?;
        Some(self.decoy.get_or_init(|| made))
    }

    /// The caller of a bearer token.
    fn bearer(&self, token: &str) -> Result<Caller, ApiError> {
        let key = digest(token);
        let now = self.now();
        let mut st = self.state();
        self.refresh_users(&mut st);
        match st.tokens.get(&key) {
            None => Err(ApiError::unauthorized(
                "BAD_TOKEN",
                "unknown or revoked token: log in again (POST /api/v5/login)",
            )),
            Some(t) if t.expires <= now => {
                st.tokens.remove(&key);
                Err(ApiError::unauthorized(
                    "TOKEN_TIME_OUT",
                    "the token has expired: log in again (POST /api/v5/login)",
                ))
            }
            Some(t) => Ok(Caller::User {
                username: t.username.clone(),
                token: key,
            }),
        }
    }

    /// Ends the session of `caller`'s token, which must belong to `username`.
    fn logout(&self, caller: &Caller, username: &str) -> Result<(), ApiError> {
        let Caller::User {
            username: who,
            token,
        } = caller
        else {
            return Err(ApiError::bad_request(
                "logout ends a bearer token's session; this request used an API key",
            ));
        };
        if who != username {
            return Err(ApiError::bad_request(format!(
                "the token belongs to user {who:?}, not {username:?}"
            )));
        }
        self.state().tokens.remove(token);
        Ok(())
    }

    /// Changes a user's password after checking the old one (argon2: call from the blocking
    /// pool). The user's sessions end.
    fn change_password(&self, username: &str, old: &str, new: &str) -> Result<(), ApiError> {
        check_password(new).map_err(ApiError::bad_request)?;
        let Some(phc) = self.user_hash(username) else {
            return Err(ApiError::not_found(format!("no user {username:?}")));
        };
        if !verify(old, &phc) {
            return Err(ApiError::bad_request("the old password is wrong"));
        }
        let new_hash = hash(new)?;
        self.update_users(|users| {
            let user = users
                .iter_mut()
                .find(|u| u.username == username)
                .ok_or_else(|| ApiError::not_found(format!("no user {username:?}")))?;
            if user.password_hash != phc {
                return Err(ApiError::bad_request(
                    "the password was changed meanwhile: the old password is wrong",
                ));
            }
            user.password_hash = new_hash;
            Ok(())
        })?;
        forget_initial_password(&self.dir, |p| p == old);
        log::info!("dashboard user {username}: password changed");
        Ok(())
    }

    fn users(&self) -> Vec<UserView> {
        let mut st = self.state();
        self.refresh_users(&mut st);
        st.users.iter().map(UserView::of).collect()
    }

    /// Adds a user (argon2: call from the blocking pool).
    fn create_user(&self, body: &CreateUser) -> Result<UserView, ApiError> {
        check_username(&body.username).map_err(ApiError::bad_request)?;
        check_password(&body.password).map_err(ApiError::bad_request)?;
        let description = body.description.clone().unwrap_or_default();
        check_desc(&description).map_err(ApiError::bad_request)?;
        let user = User {
            username: body.username.clone(),
            password_hash: hash(&body.password)?,
            description,
        };
        let view = UserView::of(&user);
        self.update_users(|users| {
            if users.iter().any(|u| u.username == user.username) {
                return Err(ApiError::bad_request(format!(
                    "user {:?} already exists",
                    user.username
                )));
            }
            if users.len() >= MAX_USERS {
                return Err(ApiError::bad_request(format!("at most {MAX_USERS} users")));
            }
            users.push(user);
            Ok(())
        })?;
        log::info!("dashboard user {}: created", view.username);
        Ok(view)
    }

    fn delete_user(&self, username: &str) -> Result<(), ApiError> {
        self.update_users(|users| {
            let i = users
                .iter()
                .position(|u| u.username == username)
                .ok_or_else(|| ApiError::not_found(format!("no user {username:?}")))?;
            if users.len() == 1 {
                return Err(ApiError::bad_request(
                    "cannot delete the last user (`broker admin passwd` sets a password instead)",
                ));
            }
            users.remove(i);
            Ok(())
        })?;
        log::info!("dashboard user {username}: deleted");
        Ok(())
    }

    // --- API keys ------------------------------------------------------------------------------

    /// What to do with `api_key:secret`: allowed (the cache knew the secret), denied, or
    /// verify this hash with argon2 and call [`Access::confirm_key`].
    fn check_key(&self, api_key: &str, secret: &str) -> Result<KeyCheck, ApiError> {
        let now = self.now_unix();
        let st = self.state();
        let key = usable_key(&st, api_key, now)?;
        if let Some(tag) = st.verified.get(api_key) {
            if ring::hmac::verify(&self.cache_key, secret.as_bytes(), tag.as_ref()).is_ok() {
                return Ok(KeyCheck::Allowed(Caller::ApiKey {
                    name: key.name.clone(),
                }));
            }
        }
        Ok(KeyCheck::Verify(key.secret_hash.clone()))
    }

    /// After argon2 said `secret` matches `phc`: allowed if the key is still usable with that
    /// hash; the secret is remembered.
    fn confirm_key(&self, api_key: &str, secret: &str, phc: &str) -> Result<Caller, ApiError> {
        let now = self.now_unix();
        let mut st = self.state();
        let key = usable_key(&st, api_key, now)?;
        if key.secret_hash != phc {
            return Err(ApiError::bad_key("wrong api_key or api_secret"));
        }
        let caller = Caller::ApiKey {
            name: key.name.clone(),
        };
        let tag = ring::hmac::sign(&self.cache_key, secret.as_bytes());
        st.verified.insert(api_key.to_owned(), tag);
        Ok(caller)
    }

    /// [`Access::check_key`], argon2 and [`Access::confirm_key`] in one (blocking) call.
    #[cfg(test)]
    fn basic(&self, api_key: &str, secret: &str) -> Result<Caller, ApiError> {
        match self.check_key(api_key, secret)? {
            KeyCheck::Allowed(c) => Ok(c),
            KeyCheck::Verify(phc) if verify(secret, &phc) => {
                self.confirm_key(api_key, secret, &phc)
            }
            KeyCheck::Verify(_) => Err(ApiError::bad_key("wrong api_key or api_secret")),
        }
    }

    fn keys(&self) -> Vec<ApiKeyView> {
        let now = self.now_unix();
        self.state()
            .keys
            .iter()
            .map(|k| ApiKeyView::of(k, None, now))
            .collect()
    }

    fn key(&self, name: &str) -> Result<ApiKeyView, ApiError> {
        let now = self.now_unix();
        self.state()
            .keys
            .iter()
            .find(|k| k.name == name)
            .map(|k| ApiKeyView::of(k, None, now))
            .ok_or_else(|| no_key(name))
    }

    /// Creates an API key (argon2: call from the blocking pool); the view holds the secret.
    fn create_key(&self, body: &CreateApiKey) -> Result<ApiKeyView, ApiError> {
        check_key_name(&body.name).map_err(ApiError::bad_request)?;
        let desc = body.desc.clone().unwrap_or_default();
        check_desc(&desc).map_err(ApiError::bad_request)?;
        let expired_at = match &body.expired_at {
            Some(v) => parse_expiry(v).map_err(ApiError::bad_request)?,
            None => None,
        };
        if self.state().keys.iter().any(|k| k.name == body.name) {
            return Err(duplicate_key(&body.name));
        }
        let secret = random_text(32)?;
        let key = ApiKey {
            name: body.name.clone(),
            api_key: random_hex(8)?,
            secret_hash: hash(&secret)?,
            desc,
            enable: body.enable.unwrap_or(true),
            expired_at,
            created_at: self.now_unix(),
        };
        let now = self.now_unix();
        let view = ApiKeyView::of(&key, Some(secret), now);
        self.update_keys(|keys| {
            if keys.iter().any(|k| k.name == key.name) {
                return Err(duplicate_key(&key.name));
            }
            if keys.len() >= MAX_API_KEYS {
                return Err(ApiError::bad_request(format!(
                    "at most {MAX_API_KEYS} API keys"
                )));
            }
            keys.push(key);
            Ok(())
        })?;
        log::info!("API key {}: created", view.name);
        Ok(view)
    }

    fn update_key(&self, name: &str, body: &UpdateApiKey) -> Result<ApiKeyView, ApiError> {
        if let Some(desc) = &body.desc {
            check_desc(desc).map_err(ApiError::bad_request)?;
        }
        let expired_at = match &body.expired_at {
            Some(v) => Some(parse_expiry(v).map_err(ApiError::bad_request)?),
            None => None,
        };
        let now = self.now_unix();
        let view = self.update_keys(|keys| {
            let key = keys
                .iter_mut()
                .find(|k| k.name == name)
                .ok_or_else(|| no_key(name))?;
            if let Some(desc) = &body.desc {
                key.desc.clone_from(desc);
            }
            if let Some(enable) = body.enable {
                key.enable = enable;
            }
            if let Some(expired_at) = expired_at {
                key.expired_at = expired_at;
            }
            Ok(ApiKeyView::of(key, None, now))
        })?;
        log::info!("API key {name}: updated");
        Ok(view)
    }

    fn delete_key(&self, name: &str) -> Result<(), ApiError> {
        self.update_keys(|keys| {
            let i = keys
                .iter()
                .position(|k| k.name == name)
                .ok_or_else(|| no_key(name))?;
            keys.remove(i);
            Ok(())
        })?;
        log::info!("API key {name}: deleted");
        Ok(())
    }

    /// Applies `f` to the keys and writes them; a key that changed is dropped from the cache.
    fn update_keys<T>(
        &self,
        f: impl FnOnce(&mut Vec<ApiKey>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut st = self.state();
        let mut keys = st.keys.clone();
        let out = f(&mut keys)?;
        write_json(
            &self.dir.join(KEYS_FILE),
            &KeysFile {
                api_keys: keys.clone(),
            },
        )?;
        let Store {
            keys: old,
            verified,
            ..
        } = &mut *st;
        verified.retain(|api_key, _| {
            old.iter().find(|k| k.api_key == *api_key)
                == keys.iter().find(|k| k.api_key == *api_key)
        });
        *old = keys;
        Ok(out)
    }

    // --- the blocking pool ---------------------------------------------------------------------

    /// Runs `f` (which hashes with argon2) on the blocking pool, at most [`HASHING`] at once;
    /// `503` if no turn comes within [`HASHING_WAIT`] (a flood of logins or wrong secrets).
    async fn hashing<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "too many password checks at once: retry later",
            )
        };
        let _permit = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        self.blocking(f).await
    }

    /// Runs `f` (which writes files) on the blocking pool.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
    }

    /// The caller of the request with these headers.
    async fn authenticate(self: &Arc<Self>, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "UNAUTHORIZED",
                "credentials required: Authorization: Bearer <token from POST /api/v5/login>, \
                 or HTTP Basic with an API key (api_key:api_secret)",
            ));
        };
        let value = value.to_str().unwrap_or_default().trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.bearer(rest);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::unauthorized(
                "UNAUTHORIZED",
                "unsupported authorization scheme: use Bearer or Basic",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((api_key, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(ApiError::bad_key(
                "malformed Basic credentials: expected base64 of api_key:api_secret",
            ));
        };
        let (api_key, secret) = (api_key.to_owned(), secret.to_owned());
        match self.check_key(&api_key, &secret)? {
            KeyCheck::Allowed(caller) => Ok(caller),
            KeyCheck::Verify(phc) => {
                self.hashing(move |a| {
                    if verify(&secret, &phc) {
                        a.confirm_key(&api_key, &secret, &phc)
                    } else {
                        Err(ApiError::bad_key("wrong api_key or api_secret"))
                    }
                })
                .await
            }
        }
    }
}

enum KeyCheck {
    Allowed(Caller),
    Verify(String),
}

/// The key `api_key` if it exists, is enabled and has not expired.
fn usable_key<'a>(st: &'a Store, api_key: &str, now: i64) -> Result<&'a ApiKey, ApiError> {
    let key = st
        .keys
        .iter()
        .find(|k| k.api_key == api_key)
        .ok_or_else(|| ApiError::bad_key("wrong api_key or api_secret"))?;
    if !key.enable {
        return Err(ApiError::bad_key("the API key is disabled"));
    }
    if key.expired_at.is_some_and(|t| now >= t) {
        return Err(ApiError::bad_key("the API key has expired"));
    }
    Ok(key)
}

/// Drops the tokens of users who are gone or whose password changed since `before`.
fn end_stale_sessions(st: &mut Store, before: &[User]) {
    let users = &st.users;
    let changed = |name: &str| {
        let old = before.iter().find(|u| u.username == name);
        let new = users.iter().find(|u| u.username == name);
        match (old, new) {
            (_, None) => true,
            (Some(o), Some(n)) => o.password_hash != n.password_hash,
            (None, Some(_)) => false,
        }
    };
    st.tokens.retain(|_, t| !changed(&t.username));
}

fn no_key(name: &str) -> ApiError {
    ApiError::not_found(format!("no API key {name:?}"))
}

fn duplicate_key(name: &str) -> ApiError {
    ApiError::bad_request(format!("an API key named {name:?} already exists"))
}

// --- offline: `broker admin passwd` ------------------------------------------------------------

/// Sets `username`'s password in `data_dir/dashboard/users.json`, creating the user if missing
/// (and the directory); returns whether the user was created. Works whether or not a broker
/// runs on `data_dir`: a running one picks the change up at its next login or token check.
/// Refuses a password shorter than [`MIN_PASSWORD_LEN`] (`InvalidInput`).
pub fn set_password(data_dir: &Path, username: &str, password: &str) -> io::Result<bool> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    check_username(username).map_err(invalid)?;
    check_password(password).map_err(invalid)?;
    let dir = data_dir.join(DIR);
    create_dir(&dir)?;
    let new_hash = hash(password)?;
    let (created, old) = {
        let _lock = FileLock::acquire(&dir)?;
        let mut users = read_users(&dir)?.unwrap_or_default();
        let (created, old) = match users.iter_mut().find(|u| u.username == username) {
            Some(u) => (
                false,
                Some(std::mem::replace(&mut u.password_hash, new_hash)),
            ),
            None => {
                if users.len() >= MAX_USERS {
                    return Err(invalid(format!("at most {MAX_USERS} users")));
                }
                users.push(User {
                    username: username.to_owned(),
                    password_hash: new_hash,
                    description: String::new(),
                });
                (true, None)
            }
        };
        write_users(&dir, &users)?;
        (created, old)
    };
    if let Some(old) = old {
        forget_initial_password(&dir, |p| verify(p, &old));
    }
    Ok(created)
}

/// Removes `initial_admin_password` if the password it holds is `was_changed`.
fn forget_initial_password(dir: &Path, was_changed: impl FnOnce(&str) -> bool) {
    let path = dir.join(INITIAL_PASSWORD_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return;
    };
    if was_changed(text.trim_end_matches(['\r', '\n'])) {
        match fs::remove_file(&path) {
            Ok(()) => log::info!("{} removed: its password was changed", path.display()),
            Err(e) => log::warn!("{}: {e}", path.display()),
        }
    }
}

// --- validation --------------------------------------------------------------------------------

/// A user name as EMQX accepts it: `^[A-Za-z0-9]+[A-Za-z0-9-_]*$`, at most 256 characters.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user name {name:?}: 1 to {MAX_NAME_LEN} letters, digits, '-' or '_', \
             starting with a letter or digit"
        ))
    }
}

/// An API key name as EMQX accepts it: `^[A-Za-z]+[A-Za-z0-9-_]*$`, 1 to 256 characters.
fn check_key_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid API key name {name:?}: 1 to {MAX_NAME_LEN} letters, digits, '-' or '_', \
             starting with a letter"
        ))
    }
}

/// A password: from [`MIN_PASSWORD_LEN`] to 256 characters.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Err(format!(
            "the password is too short: at least {MIN_PASSWORD_LEN} characters"
        ))
    } else if n > MAX_PASSWORD_LEN {
        Err(format!(
            "the password is too long: at most {MAX_PASSWORD_LEN} characters"
        ))
    } else {
        Ok(())
    }
}

fn check_desc(desc: &str) -> Result<(), String> {
    if desc.chars().count() > MAX_DESC_LEN {
        Err(format!(
            "the description is too long: at most {MAX_DESC_LEN} characters"
        ))
    } else {
        Ok(())
    }
}

/// `expired_at`: an RFC 3339 time, or `"infinity"` (`None`).
fn parse_expiry(v: &serde_json::Value) -> Result<Option<i64>, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("expired_at: expected an RFC 3339 time or \"infinity\", got {v}"))?;
    if text == "infinity" {
        return Ok(None);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|e| format!("expired_at: {text:?} is not an RFC 3339 time ({e})"))
}

/// Unix seconds as RFC 3339 in UTC.
fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

// --- hashing, randomness, files ----------------------------------------------------------------

/// The argon2id PHC string of `secret`, with the crate's default parameters and a random salt.
fn hash(secret: &str) -> io::Result<String> {
    let h: PasswordHash = argon2()
        .hash_password(secret.as_bytes())
        .map_err(|e| io::Error::other(format!("argon2: {e}")))?;
    Ok(h.to_string())
}

/// Whether `secret` matches the PHC string `phc` (its own parameters apply).
fn verify(secret: &str, phc: &str) -> bool {
    argon2().verify_password(secret.as_bytes(), phc).is_ok()
}

/// The default parameters (19 MiB, 2 passes); unit tests use the cheapest ones.
fn argon2() -> Argon2<'static> {
    #[cfg(test)]
    {
        let params = argon2::Params::new(8, 1, 1, None).unwrap_or_default();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    }
    #[cfg(not(test))]
    Argon2::default()
}

fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(b)
}

/// `n` random bytes, base64url without padding (24 characters for 18 bytes).
fn random_text(n: usize) -> io::Result<String> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n)?))
}

fn random_hex(n: usize) -> io::Result<String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}

/// The users of `users.json`; `None` if there is no such file.
fn read_users(dir: &Path) -> io::Result<Option<Vec<User>>> {
    Ok(read_json::<UsersFile>(&dir.join(USERS_FILE))?.map(|f| f.users))
}

fn write_users(dir: &Path, users: &[User]) -> io::Result<()> {
    write_json(
        &dir.join(USERS_FILE),
        &UsersFile {
            users: users.to_vec(),
        },
    )
}

fn read_keys(dir: &Path) -> io::Result<Vec<ApiKey>> {
    Ok(read_json::<KeysFile>(&dir.join(KEYS_FILE))?
        .map(|f| f.api_keys)
        .unwrap_or_default())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Replaces `path` with `bytes`: a temporary file (mode 0600), fsync, rename, fsync of the
/// directory. A reader sees the old file or the new one, never a part.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A temporary left by a crash keeps its mode: set it.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    })
}

/// An exclusive `flock` on `dashboard/.lock`, held while `users.json` is read, changed and
/// written.
struct FileLock {
    _file: fs::File,
}

impl FileLock {
    fn acquire(dir: &Path) -> io::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        }
        Ok(Self { _file: file })
    }
}

// --- HTTP --------------------------------------------------------------------------------------

/// An error answer: the status and `{"code", "message"}`. A 401 carries `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    fn bad_key(message: impl Into<String>) -> Self {
        Self::unauthorized("BAD_API_KEY_OR_SECRET", message)
    }

    fn login_failed() -> Self {
        Self::unauthorized("BAD_USERNAME_OR_PWD", "Auth failed")
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }

    /// The `code` of the body.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The `message` of the body.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<io::Error> for ApiError {
    fn from(e: io::Error) -> Self {
        log::error!("dashboard access: {e}");
        Self::internal(e.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(
            self.status,
            &ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            },
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

/// `body` as `application/json`.
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"code":"INTERNAL_ERROR","message":"cannot encode the answer: {e}"}}"#),
        )
            .into_response(),
    }
}

/// A JSON request body, whatever its `Content-Type`; anything else is `400` with
/// `{"code": "BAD_REQUEST", "message"}` (axum's `Json` answers in plain text).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

#[axum::async_trait]
impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "PAYLOAD_TOO_LARGE"
                } else {
                    "BAD_REQUEST"
                };
                ApiError::new(e.status(), code, e.body_text())
            })?;
        // The error names the field (`qos: invalid type: ...`).
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A path parameter, or `400` with `{"code", "message"}`.
fn path_param(p: Result<axum::extract::Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|axum::extract::Path(s)| s)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The middleware of protected routes: lets the request through with a valid bearer token or
/// API key (the [`Caller`] in its extensions), else `401` with `{"code", "message"}` —
/// `UNAUTHORIZED` (no or unknown credentials), `BAD_TOKEN`, `TOKEN_TIME_OUT`,
/// `BAD_API_KEY_OR_SECRET` — and `WWW-Authenticate`.
pub async fn authorize(
    State(access): State<Arc<Access>>,
    mut req: Request,
    next: Next,
) -> Response {
    match access.authenticate(req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The routes of access control, state applied: `POST /api/v5/login` (public), and behind
/// [`authorize`]: `POST /api/v5/logout`, `GET|POST /api/v5/users`,
/// `DELETE /api/v5/users/{username}`, `POST /api/v5/users/{username}/change_pwd`,
/// `GET|POST /api/v5/api_key`, `GET|PUT|DELETE /api/v5/api_key/{name}`.
pub fn router(access: Arc<Access>) -> Router {
    let protected = Router::new()
        .route("/api/v5/logout", post(logout))
        .route("/api/v5/users", get(users).post(create_user))
        .route("/api/v5/users/:username", delete(delete_user))
        .route("/api/v5/users/:username/change_pwd", post(change_pwd))
        .route("/api/v5/api_key", get(api_keys).post(create_api_key))
        .route(
            "/api/v5/api_key/:name",
            get(api_key).put(update_api_key).delete(delete_api_key),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            authorize,
        ));
    Router::new()
        .route("/api/v5/login", post(login))
        .merge(protected)
        .with_state(access)
}

// --- bodies ------------------------------------------------------------------------------------

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `BAD_REQUEST`, `NOT_FOUND`, `BAD_USERNAME_OR_PWD`, `UNAUTHORIZED`, `BAD_TOKEN`,
    /// `TOKEN_TIME_OUT`, `BAD_API_KEY_OR_SECRET`, `PAYLOAD_TOO_LARGE`, `SERVICE_UNAVAILABLE`,
    /// `INTERNAL_ERROR`.
    #[schema(example = "BAD_REQUEST")]
    code: String,
    /// What went wrong.
    message: String,
}

/// `POST /api/v5/login`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "admin")]
    username: String,
    password: String,
}

/// The answer to a login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token: `Authorization: Bearer <token>`.
    token: String,
    /// The EMQX version whose API this follows.
    #[schema(example = "5.1.0")]
    version: String,
    license: License,
}

/// EMQX's license field.
#[derive(Debug, Serialize, ToSchema)]
pub struct License {
    #[schema(example = "opensource")]
    edition: String,
}

/// `POST /api/v5/logout`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// The user whose token this is.
    username: String,
}

/// `POST /api/v5/users/{username}/change_pwd`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    old_pwd: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    new_pwd: String,
}

/// `POST /api/v5/users`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUser {
    /// Letters, digits, `-` and `_`, starting with a letter or digit.
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]*$",
        min_length = 1,
        max_length = 256
    )]
    username: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    #[schema(max_length = 1024)]
    description: Option<String>,
}

/// A dashboard user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    username: String,
    description: String,
}

impl UserView {
    fn of(u: &User) -> Self {
        Self {
            username: u.username.clone(),
            description: u.description.clone(),
        }
    }
}

/// `POST /api/v5/api_key`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateApiKey {
    /// 1 to 256 letters, digits, `-` and `_`, starting with a letter.
    #[schema(
        example = "ci-script",
        pattern = "^[A-Za-z][A-Za-z0-9_-]*$",
        min_length = 1,
        max_length = 256
    )]
    name: String,
    #[schema(max_length = 1024)]
    desc: Option<String>,
    /// Default true.
    enable: Option<bool>,
    /// An RFC 3339 time or `"infinity"` (the default).
    #[schema(value_type = Option<String>, example = "2030-01-01T00:00:00Z")]
    expired_at: Option<serde_json::Value>,
}

/// `PUT /api/v5/api_key/{name}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateApiKey {
    #[schema(max_length = 1024)]
    desc: Option<String>,
    enable: Option<bool>,
    /// An RFC 3339 time or `"infinity"`.
    #[schema(value_type = Option<String>, example = "infinity")]
    expired_at: Option<serde_json::Value>,
}

/// An API key. `api_secret` is only in the answer to its creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    name: String,
    /// The user name of HTTP Basic.
    #[schema(example = "a87465f14ca0d420")]
    api_key: String,
    /// The password of HTTP Basic; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_secret: Option<String>,
    desc: String,
    enable: bool,
    /// RFC 3339 (UTC) or `"infinity"`.
    #[schema(example = "infinity")]
    expired_at: String,
    /// RFC 3339 (UTC).
    #[schema(example = "2026-11-26T14:25:01Z")]
    created_at: String,
    /// Whether `expired_at` has passed.
    expired: bool,
}

impl ApiKeyView {
    fn of(k: &ApiKey, api_secret: Option<String>, now: i64) -> Self {
        Self {
            name: k.name.clone(),
            api_key: k.api_key.clone(),
            api_secret,
            desc: k.desc.clone(),
            enable: k.enable,
            expired_at: k.expired_at.map_or_else(|| "infinity".to_owned(), rfc3339),
            created_at: rfc3339(k.created_at),
            expired: k.expired_at.is_some_and(|t| now >= t),
        }
    }
}

// --- handlers ----------------------------------------------------------------------------------

/// Logs a dashboard user in: a bearer token valid for `dashboard.token_expired_time`.
#[utoipa::path(
    post,
    path = "/api/v5/login",
    tag = "dashboard",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong user name or password (BAD_USERNAME_OR_PWD)", body = ErrorBody),
    )
)]
async fn login(
    State(access): State<Arc<Access>>,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    // What the log shows of a name that may be anything.
    let username: String = body.username.chars().take(64).collect();
    let token = access
        .hashing(move |a| a.login(&body.username, &body.password))
        .await
        .inspect_err(|e| {
            if e.status == StatusCode::UNAUTHORIZED {
                log::info!("dashboard login of {username:?} refused");
            }
        })?;
    log::info!("dashboard user {username} logged in");
    Ok(json(
        StatusCode::OK,
        &LoginResponse {
            token,
            version: EMQX_VERSION.to_owned(),
            license: License {
                edition: "opensource".to_owned(),
            },
        },
    ))
}

/// Ends the session of the bearer token used.
#[utoipa::path(
    post,
    path = "/api/v5/logout",
    tag = "dashboard",
    request_body = LogoutRequest,
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = "Not this user's token, or an API key", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
async fn logout(
    State(access): State<Arc<Access>>,
    axum::Extension(caller): axum::Extension<Caller>,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> Result<StatusCode, ApiError> {
    access.logout(&caller, &body.username)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The dashboard users.
#[utoipa::path(
    get,
    path = "/api/v5/users",
    tag = "dashboard",
    responses(
        (status = 200, description = "The users", body = [UserView]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
async fn users(State(access): State<Arc<Access>>) -> Response {
    json(StatusCode::OK, &access.users())
}

/// Creates a dashboard user.
#[utoipa::path(
    post,
    path = "/api/v5/users",
    tag = "dashboard",
    request_body = CreateUser,
    responses(
        (status = 200, description = "Created", body = UserView),
        (status = 400, description = "Invalid or duplicate", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
async fn create_user(
    State(access): State<Arc<Access>>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    let view = access.hashing(move |a| a.create_user(&body)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// Deletes a dashboard user (not the last one); their sessions end.
#[utoipa::path(
    delete,
    path = "/api/v5/users/{username}",
    tag = "dashboard",
    params(("username" = String, Path, description = "The user")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The last user", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn delete_user(
    State(access): State<Arc<Access>>,
    username: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let username = path_param(username)?;
    access.blocking(move |a| a.delete_user(&username)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a user's password, given the old one; the user's sessions end.
#[utoipa::path(
    post,
    path = "/api/v5/users/{username}/change_pwd",
    tag = "dashboard",
    params(("username" = String, Path, description = "The user")),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Wrong old password, or the new one is too short", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn change_pwd(
    State(access): State<Arc<Access>>,
    username: Result<axum::extract::Path<String>, PathRejection>,
    JsonBody(body): JsonBody<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    let username = path_param(username)?;
    access
        .hashing(move |a| a.change_password(&username, &body.old_pwd, &body.new_pwd))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The API keys, without secrets.
#[utoipa::path(
    get,
    path = "/api/v5/api_key",
    tag = "api_key",
    responses(
        (status = 200, description = "The API keys", body = [ApiKeyView]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
async fn api_keys(State(access): State<Arc<Access>>) -> Response {
    json(StatusCode::OK, &access.keys())
}

/// Creates an API key; the answer holds its secret, shown only here.
#[utoipa::path(
    post,
    path = "/api/v5/api_key",
    tag = "api_key",
    request_body = CreateApiKey,
    responses(
        (status = 200, description = "Created, with api_secret", body = ApiKeyView),
        (status = 400, description = "Invalid or duplicate name, invalid expired_at", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
async fn create_api_key(
    State(access): State<Arc<Access>>,
    JsonBody(body): JsonBody<CreateApiKey>,
) -> Result<Response, ApiError> {
    let view = access.hashing(move |a| a.create_key(&body)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// One API key, without its secret.
#[utoipa::path(
    get,
    path = "/api/v5/api_key/{name}",
    tag = "api_key",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 200, description = "The API key", body = ApiKeyView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
async fn api_key(
    State(access): State<Arc<Access>>,
    name: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    Ok(json(StatusCode::OK, &access.key(&name)?))
}

/// Changes an API key's description, `enable` or expiry; takes effect on the next call.
#[utoipa::path(
    put,
    path = "/api/v5/api_key/{name}",
    tag = "api_key",
    params(("name" = String, Path, description = "The key's name")),
    request_body = UpdateApiKey,
    responses(
        (status = 200, description = "Updated", body = ApiKeyView),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
async fn update_api_key(
    State(access): State<Arc<Access>>,
    name: Result<axum::extract::Path<String>, PathRejection>,
    JsonBody(body): JsonBody<UpdateApiKey>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let view = access.blocking(move |a| a.update_key(&name, &body)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// Deletes an API key; calls with it fail at once.
#[utoipa::path(
    delete,
    path = "/api/v5/api_key/{name}",
    tag = "api_key",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
async fn delete_api_key(
    State(access): State<Arc<Access>>,
    name: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_param(name)?;
    access.blocking(move |a| a.delete_key(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- OpenAPI -----------------------------------------------------------------------------------

/// The OpenAPI description of the access-control routes, with the security schemes
/// `basicAuth` (API keys) and `bearerAuth` (tokens) required by default (the login route opts
/// out). Merge it into the API's document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        login,
        logout,
        users,
        create_user,
        delete_user,
        change_pwd,
        api_keys,
        create_api_key,
        api_key,
        update_api_key,
        delete_api_key
    ),
    components(schemas(
        ErrorBody,
        LoginRequest,
        LoginResponse,
        License,
        LogoutRequest,
        ChangePassword,
        CreateUser,
        UserView,
        CreateApiKey,
        UpdateApiKey,
        ApiKeyView
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "dashboard", description = "Dashboard users: login, logout, passwords"),
        (name = "api_key", description = "API keys for scripts (HTTP Basic api_key:api_secret)")
    )
)]
pub struct AccessDoc;

/// Adds the security schemes `basicAuth` (HTTP Basic with an API key) and `bearerAuth` (a
/// token from `POST /api/v5/login`), and requires one of them for every operation that does
/// not say otherwise.
#[derive(Debug)]
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let security = openapi.security.get_or_insert_with(Vec::new);
        for name in ["basicAuth", "bearerAuth"] {
            let requirement = SecurityRequirement::new(name, Vec::<String>::new());
            if !security.contains(&requirement) {
                security.push(requirement);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn scratch() -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "broker-access-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A clock the test moves: seconds since the epoch.
    fn test_clock() -> (Arc<AtomicU64>, Clock) {
        let secs = Arc::new(AtomicU64::new(1_800_000_000));
        let c = secs.clone();
        (
            secs,
            Box::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst))),
        )
    }

    fn open(dir: &Path) -> (Opened, Arc<AtomicU64>) {
        let (secs, clock) = test_clock();
        let opened = Access::open_with_clock(dir, AccessOptions::default(), clock).unwrap();
        (opened, secs)
    }

    fn initial_password(dir: &Path) -> String {
        fs::read_to_string(dir.join(DIR).join(INITIAL_PASSWORD_FILE))
            .unwrap()
            .trim_end()
            .to_owned()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn key_body(name: &str) -> CreateApiKey {
        CreateApiKey {
            name: name.to_owned(),
            desc: None,
            enable: None,
            expired_at: None,
        }
    }

    #[test]
    fn hashes_are_salted_phc_strings_that_verify() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(verify("correct horse", &a) && verify("correct horse", &b));
        assert!(!verify("correct horsE", &a));
        assert!(!verify("correct horse", "not a PHC string"));
        // The production parameters are the crate's defaults.
        let p = Argon2::default();
        let h: PasswordHash = p.hash_password(b"x").unwrap();
        assert!(h.to_string().contains("m=19456,t=2,p=1"), "{h}");
    }

    #[test]
    fn first_start_generates_an_admin_password_once() {
        let data = scratch();
        let (opened, _) = open(&data);
        let path = opened.generated.clone().unwrap();
        assert_eq!(path, data.join("dashboard/initial_admin_password"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&data.join("dashboard/users.json")), 0o600);
        assert_eq!(mode(&data.join("dashboard")), 0o700);
        let password = initial_password(&data);
        assert_eq!(password.len(), 24);
        assert!(
            password
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{password}"
        );
        let stored = fs::read_to_string(data.join("dashboard/users.json")).unwrap();
        assert!(!stored.contains(&password), "only the hash is stored");
        assert!(opened.access.login("admin", &password).is_ok());
        assert_eq!(
            opened.access.login("admin", "wrong-password").unwrap_err(),
            ApiError::login_failed()
        );
        assert_eq!(
            opened.access.login("nobody", &password).unwrap_err(),
            ApiError::login_failed()
        );
        drop(opened);

        // A restart finds the user: nothing generated, the file unchanged.
        let (again, _) = open(&data);
        assert!(again.generated.is_none());
        assert_eq!(initial_password(&data), password);
        assert!(again.access.login("admin", &password).is_ok());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn the_default_username_is_configurable_and_validated() {
        let data = scratch();
        let (_, clock) = test_clock();
        let options = AccessOptions {
            default_username: "root".to_owned(),
            ..AccessOptions::default()
        };
        let opened = Access::open_with_clock(&data, options, clock).unwrap();
        assert!(
            opened
                .access
                .login("root", &initial_password(&data))
                .is_ok()
        );
        let (_, clock) = test_clock();
        let bad = AccessOptions {
            default_username: "no/slash".to_owned(),
            ..AccessOptions::default()
        };
        let e = Access::open_with_clock(&scratch(), bad, clock).unwrap_err();
        assert!(e.to_string().contains("dashboard.default_username"), "{e}");
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_corrupt_users_file_is_an_error_not_a_new_password() {
        let data = scratch();
        fs::create_dir_all(data.join(DIR)).unwrap();
        fs::write(data.join("dashboard/users.json"), "{not json").unwrap();
        let (_, clock) = test_clock();
        let e = Access::open_with_clock(&data, AccessOptions::default(), clock).unwrap_err();
        assert!(e.to_string().contains("users.json"), "{e}");
        assert!(!data.join("dashboard/initial_admin_password").exists());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn tokens_expire_and_end_at_logout() {
        let data = scratch();
        let (opened, secs) = open(&data);
        let a = &opened.access;
        let password = initial_password(&data);
        let token = a.login("admin", &password).unwrap();
        let caller = a.bearer(&token).unwrap();
        assert!(matches!(&caller, Caller::User { username, .. } if username == "admin"));
        assert_eq!(a.bearer("made-up").unwrap_err().code(), "BAD_TOKEN");
        // Valid until the hour has passed.
        secs.fetch_add(3599, Ordering::SeqCst);
        assert!(a.bearer(&token).is_ok());
        secs.fetch_add(1, Ordering::SeqCst);
        assert_eq!(a.bearer(&token).unwrap_err().code(), "TOKEN_TIME_OUT");
        assert_eq!(a.bearer(&token).unwrap_err().code(), "BAD_TOKEN");

        let token = a.login("admin", &password).unwrap();
        let caller = a.bearer(&token).unwrap();
        assert_eq!(
            a.logout(&caller, "someone-else").unwrap_err().code(),
            "BAD_REQUEST"
        );
        a.logout(&caller, "admin").unwrap();
        assert_eq!(a.bearer(&token).unwrap_err().code(), "BAD_TOKEN");
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn changing_a_password_ends_sessions_and_forgets_the_initial_file() {
        let data = scratch();
        let (opened, _) = open(&data);
        let a = &opened.access;
        let password = initial_password(&data);
        let token = a.login("admin", &password).unwrap();
        assert_eq!(
            a.change_password("admin", "wrong", "new-password-1")
                .unwrap_err()
                .code(),
            "BAD_REQUEST"
        );
        assert_eq!(
            a.change_password("admin", &password, "short")
                .unwrap_err()
                .code(),
            "BAD_REQUEST"
        );
        assert_eq!(
            a.change_password("ghost", &password, "new-password-1")
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
        a.change_password("admin", &password, "new-password-1")
            .unwrap();
        assert!(a.bearer(&token).is_err(), "the old session ended");
        assert!(a.login("admin", &password).is_err());
        assert!(a.login("admin", "new-password-1").is_ok());
        assert!(!data.join("dashboard/initial_admin_password").exists());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn an_offline_password_change_reaches_a_running_instance() {
        let data = scratch();
        let (opened, _) = open(&data);
        let a = &opened.access;
        let password = initial_password(&data);
        let token = a.login("admin", &password).unwrap();
        assert_eq!(
            set_password(&data, "admin", "short").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(!set_password(&data, "admin", "offline-pass").unwrap());
        assert!(
            !data.join("dashboard/initial_admin_password").exists(),
            "the generated password no longer works"
        );
        assert!(a.bearer(&token).is_err(), "its sessions ended");
        assert!(a.login("admin", &password).is_err());
        assert!(a.login("admin", "offline-pass").is_ok());
        // A new user, on a directory with no broker at all.
        let fresh = scratch();
        assert!(set_password(&fresh, "ops", "ops-password").unwrap());
        assert_eq!(mode(&fresh.join("dashboard/users.json")), 0o600);
        let (_, clock) = test_clock();
        let opened = Access::open_with_clock(&fresh, AccessOptions::default(), clock).unwrap();
        assert!(
            opened.generated.is_none(),
            "a user exists: nothing generated"
        );
        assert!(opened.access.login("ops", "ops-password").is_ok());
        fs::remove_dir_all(&data).unwrap();
        fs::remove_dir_all(&fresh).unwrap();
    }

    #[test]
    fn users_can_be_added_listed_and_deleted_but_not_the_last() {
        let data = scratch();
        let (opened, _) = open(&data);
        let a = &opened.access;
        let body = CreateUser {
            username: "viewer".to_owned(),
            password: "viewer-password".to_owned(),
            description: Some("read only".to_owned()),
        };
        a.create_user(&body).unwrap();
        assert_eq!(a.create_user(&body).unwrap_err().code(), "BAD_REQUEST");
        let names: Vec<String> = a.users().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["admin", "viewer"]);
        let token = a.login("viewer", "viewer-password").unwrap();
        a.delete_user("viewer").unwrap();
        assert!(a.bearer(&token).is_err(), "a deleted user's sessions end");
        assert_eq!(a.delete_user("viewer").unwrap_err().code(), "NOT_FOUND");
        assert_eq!(a.delete_user("admin").unwrap_err().code(), "BAD_REQUEST");
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn key_names_follow_emqx() {
        for ok in ["a", "Key-1_b", &"k".repeat(256)] {
            assert!(check_key_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a b", "a/b", "ä", &"k".repeat(257)] {
            assert!(check_key_name(bad).is_err(), "{bad}");
        }
        assert!(check_username("1admin").is_ok());
        assert!(check_username("_admin").is_err());
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"p".repeat(257)).is_err());
        assert_eq!(
            parse_expiry(&serde_json::json!("2030-01-01T00:00:00Z")),
            Ok(Some(1_893_456_000))
        );
        assert_eq!(
            parse_expiry(&serde_json::json!("2030-01-01T08:00:00+08:00")),
            Ok(Some(1_893_456_000))
        );
        assert_eq!(parse_expiry(&serde_json::json!("infinity")), Ok(None));
        assert!(parse_expiry(&serde_json::json!("tomorrow")).is_err());
        assert!(parse_expiry(&serde_json::json!(12)).is_err());
        assert_eq!(rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    }

    #[test]
    fn api_keys_authenticate_until_disabled_deleted_or_expired() {
        let data = scratch();
        let (opened, secs) = open(&data);
        let a = &opened.access;
        let created = a.create_key(&key_body("ci")).unwrap();
        let secret = created.api_secret.clone().unwrap();
        assert_eq!(created.api_key.len(), 16);
        assert!(created.enable && created.expired_at == "infinity");
        let stored = fs::read_to_string(data.join("dashboard/api_keys.json")).unwrap();
        assert!(!stored.contains(&secret), "only the hash is stored");
        assert_eq!(mode(&data.join("dashboard/api_keys.json")), 0o600);
        assert_eq!(
            a.create_key(&key_body("ci")).unwrap_err().code(),
            "BAD_REQUEST"
        );
        assert_eq!(
            a.create_key(&key_body("9x")).unwrap_err().code(),
            "BAD_REQUEST"
        );
        assert!(a.keys().iter().all(|k| k.api_secret.is_none()));

        let k = created.api_key.as_str();
        assert_eq!(
            a.basic(k, &secret).unwrap(),
            Caller::ApiKey {
                name: "ci".to_owned()
            }
        );
        assert!(a.state().verified.contains_key(k), "remembered");
        assert!(matches!(a.check_key(k, &secret), Ok(KeyCheck::Allowed(_))));
        assert!(matches!(a.check_key(k, "wrong"), Ok(KeyCheck::Verify(_))));
        assert_eq!(
            a.basic(k, "wrong").unwrap_err().code(),
            "BAD_API_KEY_OR_SECRET"
        );
        assert!(a.basic("0000000000000000", &secret).is_err());

        // Disabled: refused at once, and forgotten.
        let off = UpdateApiKey {
            desc: Some("paused".to_owned()),
            enable: Some(false),
            expired_at: None,
        };
        let view = a.update_key("ci", &off).unwrap();
        assert!(!view.enable && view.desc == "paused");
        assert!(a.basic(k, &secret).is_err());
        assert!(!a.state().verified.contains_key(k));
        let on = UpdateApiKey {
            desc: None,
            enable: Some(true),
            expired_at: None,
        };
        a.update_key("ci", &on).unwrap();
        assert!(a.basic(k, &secret).is_ok());

        // Expired: refused as soon as the time passes, cache or not.
        let soon = UpdateApiKey {
            desc: None,
            enable: None,
            expired_at: Some(serde_json::json!(rfc3339(
                secs.load(Ordering::SeqCst) as i64 + 10
            ))),
        };
        a.update_key("ci", &soon).unwrap();
        assert!(a.basic(k, &secret).is_ok());
        secs.fetch_add(10, Ordering::SeqCst);
        assert_eq!(
            a.basic(k, &secret).unwrap_err(),
            ApiError::bad_key("the API key has expired")
        );
        assert!(a.key("ci").unwrap().expired);

        // Deleted: refused at once.
        let forever = UpdateApiKey {
            desc: None,
            enable: None,
            expired_at: Some(serde_json::json!("infinity")),
        };
        a.update_key("ci", &forever).unwrap();
        assert!(a.basic(k, &secret).is_ok());
        a.delete_key("ci").unwrap();
        assert!(a.basic(k, &secret).is_err());
        assert!(a.state().verified.is_empty());
        assert_eq!(a.delete_key("ci").unwrap_err().code(), "NOT_FOUND");
        assert_eq!(a.key("ci").unwrap_err().code(), "NOT_FOUND");

        // Keys survive a restart.
        let other = a.create_key(&key_body("other")).unwrap();
        drop(opened);
        let (again, _) = open(&data);
        let names: Vec<String> = again.access.keys().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["other"]);
        assert!(
            again
                .access
                .basic(&other.api_key, other.api_secret.as_deref().unwrap())
                .is_ok()
        );
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_key_changed_during_verification_is_refused() {
        let data = scratch();
        let (opened, _) = open(&data);
        let a = &opened.access;
        let created = a.create_key(&key_body("race")).unwrap();
        let secret = created.api_secret.unwrap();
        let KeyCheck::Verify(phc) = a.check_key(&created.api_key, &secret).unwrap() else {
            panic!("not cached yet");
        };
        a.delete_key("race").unwrap();
        assert!(a.confirm_key(&created.api_key, &secret, &phc).is_err());
        assert!(a.state().verified.is_empty());
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn errors_are_json_with_a_challenge_on_401() {
        let r = ApiError::bad_key("nope").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = ApiError::not_found("x").into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn the_openapi_document_has_the_paths_and_schemes() {
        use utoipa::OpenApi as _;
        let doc = serde_json::to_value(AccessDoc::openapi()).unwrap();
        for path in [
            "/api/v5/login",
            "/api/v5/logout",
            "/api/v5/users",
            "/api/v5/users/{username}/change_pwd",
            "/api/v5/api_key",
            "/api/v5/api_key/{name}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["basicAuth"]["scheme"], "basic");
        assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
        assert_eq!(
            doc["paths"]["/api/v5/login"]["post"]["security"],
            serde_json::json!([{}])
        );
    }
}
