//! The key store in Redis, shared by several orproxy instances.
//!
//! Whole-store reads and administrative changes (the `keys` commands, the
//! admin API, `serve` at start) work on a [`StoreFile`] snapshot, like the
//! JSON file: [`RedisStore::update`] reads it under `WATCH`, lets the
//! change edit it, and writes back only the fields that changed in one
//! `MULTI`/`EXEC`, retrying when a running server changed a watched key
//! meanwhile. The servers' own state updates are atomic Lua calls
//! ([`script`]). Every change is announced on the `P:events` channel.

pub(crate) mod layout;
pub(crate) mod script;
pub(crate) mod usage;

use super::StoreError;
use super::location::RedisUrl;
use crate::model::{STORE_VERSION, StoreFile};
use layout::Names;
use redis::{Connection, Value};
use std::collections::HashMap;
use std::time::Duration;

/// How long to wait for Redis to accept a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a snapshot update is retried when servers keep changing it.
const MAX_TRIES: u32 = 50;

/// A handle on a store in Redis. Cheap; connects when used.
#[derive(Debug, Clone)]
pub(crate) struct RedisStore {
    url: RedisUrl,
    client: redis::Client,
    names: Names,
}

impl RedisStore {
    /// A store at `url` (checked when the location was parsed).
    pub(crate) fn new(url: &RedisUrl) -> Result<Self, StoreError> {
        let client = redis::Client::open(url.expose()).map_err(|e| StoreError::Redis {
            action: "cannot use",
            store: url.shown().to_owned(),
            msg: url.scrub(&e.to_string()),
        })?;
        Ok(Self {
            url: url.clone(),
            client,
            names: Names::new(url.prefix()),
        })
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        self.url.shown()
    }

    /// The key names.
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// A [`StoreError`] for a failed Redis call, password scrubbed.
    pub(crate) fn error(&self, action: &'static str, e: &redis::RedisError) -> StoreError {
        StoreError::Redis {
            action,
            store: self.shown().to_owned(),
            msg: self.url.scrub(&e.to_string()),
        }
    }

    /// A new connection with timeouts set.
    pub(crate) fn connect(&self) -> Result<Connection, StoreError> {
        let con = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| self.error("cannot reach", &e))?;
        con.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| con.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| self.error("cannot reach", &e))?;
        Ok(con)
    }

    /// Read the whole store.
    pub(crate) fn load(&self) -> Result<StoreFile, StoreError> {
        let mut con = self.connect()?;
        self.read(&mut con).map(|(file, ..)| file)
    }

    /// Read the whole store on `con`, with each key's state version (see
    /// [`layout::version_of`]).
    pub(crate) fn load_versioned(
        &self,
        con: &mut Connection,
    ) -> Result<(StoreFile, HashMap<String, u64>), StoreError> {
        self.read(con).map(|(file, _, versions)| (file, versions))
    }

    /// Whether the store's marker exists (false: Redis lost or never had it).
    pub(crate) fn exists(&self, con: &mut Connection) -> Result<bool, StoreError> {
        redis::cmd("EXISTS")
            .arg(self.names.meta())
            .query::<bool>(con)
            .map_err(|e| self.error("cannot read", &e))
    }

    /// The snapshot, the highest order score in use, and the keys' versions.
    fn read(
        &self,
        con: &mut Connection,
    ) -> Result<(StoreFile, f64, HashMap<String, u64>), StoreError> {
        let read_err = |e: redis::RedisError| self.error("cannot read", &e);
        let version: Option<String> = redis::cmd("HGET")
            .arg(self.names.meta())
            .arg("version")
            .query(con)
            .map_err(read_err)?;
        if let Some(v) = version
            && v != STORE_VERSION.to_string()
        {
            return Err(StoreError::Redis {
                action: "cannot use",
                store: self.shown().to_owned(),
                msg: format!(
                    "it holds store format version {v}, but this orproxy reads version {STORE_VERSION}; \
                     use a newer orproxy. orproxy will not overwrite it"
                ),
            });
        }
        let ids: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.names.ids())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(con)
            .map_err(read_err)?;
        let max_score = ids.iter().map(|(_, s)| *s).fold(0.0, f64::max);
        let mut pipe = redis::pipe();
        for (id, _) in &ids {
            pipe.cmd("HGETALL").arg(self.names.key(id));
        }
        let maps: Vec<HashMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query(con).map_err(read_err)?
        };
        let mut file = StoreFile::default();
        let mut versions = HashMap::with_capacity(ids.len());
        for ((id, _), map) in ids.iter().zip(maps) {
            if map.is_empty() {
                continue; // listed but gone: removed mid-read
            }
            versions.insert(id.clone(), layout::version_of(&map));
            file.keys
                .push(layout::record_from(id, &map).map_err(|e| self.corrupt(&e))?);
        }
        let accounts: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.names.accounts())
            .query(con)
            .map_err(read_err)?;
        let mut pipe = redis::pipe();
        for name in &accounts {
            pipe.cmd("HGETALL").arg(self.names.account(name));
            pipe.cmd("ZRANGE")
                .arg(self.names.account_minute(name))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES");
        }
        let answers: Vec<Value> = if accounts.is_empty() {
            Vec::new()
        } else {
            pipe.query(con).map_err(read_err)?
        };
        let mut answers = answers.into_iter();
        for name in accounts {
            let (Some(map), Some(minute)) = (answers.next(), answers.next()) else {
                break;
            };
            let map: HashMap<String, String> =
                redis::from_redis_value(map).map_err(|e| read_err(e.into()))?;
            let minute: Vec<(String, f64)> =
                redis::from_redis_value(minute).map_err(|e| read_err(e.into()))?;
            if map.is_empty() {
                continue;
            }
            let mut record = layout::account_from(&name, &map).map_err(|e| self.corrupt(&e))?;
            record.last_minute = layout::minute_from(&minute);
            file.accounts.insert(name, record);
        }
        Ok((file, max_score, versions))
    }

    fn corrupt(&self, e: &layout::FieldError) -> StoreError {
        StoreError::Redis {
            action: "cannot read",
            store: self.shown().to_owned(),
            msg: format!("{e}; fix or delete that field. orproxy will not overwrite it"),
        }
    }

    /// Read-modify-write of the whole store, atomic against every other
    /// writer: `change` may run more than once (when a server changed the
    /// store meanwhile), each time on a fresh snapshot. Only changed fields
    /// are written. Returns what the last run of `change` returned.
    pub(crate) fn update<T>(
        &self,
        mut change: impl FnMut(&mut StoreFile) -> T,
    ) -> Result<T, StoreError> {
        let mut con = self.connect()?;
        let write_err = |e: redis::RedisError| self.error("cannot write", &e);
        for attempt in 0..MAX_TRIES {
            redis::cmd("WATCH")
                .arg(self.names.meta())
                .arg(self.names.ids())
                .arg(self.names.accounts())
                .exec(&mut con)
                .map_err(write_err)?;
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.names.ids())
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .map_err(write_err)?;
            let accounts: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.names.accounts())
                .query(&mut con)
                .map_err(write_err)?;
            if !ids.is_empty() || !accounts.is_empty() {
                let mut watch = redis::cmd("WATCH");
                for id in &ids {
                    watch.arg(self.names.key(id));
                }
                for name in &accounts {
                    watch.arg(self.names.account(name));
                }
                watch.exec(&mut con).map_err(write_err)?;
            }
            let existed = self.exists(&mut con)?;
            let (before, max_score, _) = match self.read(&mut con) {
                Ok(read) => read,
                Err(e) => {
                    let _ = redis::cmd("UNWATCH").exec(&mut con);
                    return Err(e);
                }
            };
            let mut after = before.clone();
            let out = change(&mut after);
            let mut pipe = redis::pipe();
            pipe.atomic();
            let changed = layout::diff(&self.names, &before, &after, max_score, &mut pipe)?;
            if !changed && existed {
                redis::cmd("UNWATCH").exec(&mut con).map_err(write_err)?;
                return Ok(out);
            }
            pipe.cmd("HSET")
                .arg(self.names.meta())
                .arg("version")
                .arg(STORE_VERSION);
            if changed {
                pipe.cmd("PUBLISH")
                    .arg(self.names.channel())
                    .arg(layout::Message::reload(""));
            }
            let done: Value = pipe.query(&mut con).map_err(write_err)?;
            if !matches!(done, Value::Nil) {
                return Ok(out);
            }
            // A server changed a watched key meanwhile: read again.
            std::thread::sleep(Duration::from_millis(
                u64::from(attempt.min(10)) * 5 + fastrand::u64(0..5),
            ));
        }
        Err(StoreError::Redis {
            action: "cannot write",
            store: self.shown().to_owned(),
            msg: format!("the store kept changing under {MAX_TRIES} attempts in a row; try again"),
        })
    }

    /// Write `file` as the whole store if the store does not exist (Redis
    /// came back empty): returns whether it was written. Another instance
    /// restoring at the same time makes this a no-op.
    pub(crate) fn restore_if_missing(
        &self,
        con: &mut Connection,
        file: &StoreFile,
    ) -> Result<bool, StoreError> {
        let write_err = |e: redis::RedisError| self.error("cannot write", &e);
        redis::cmd("WATCH")
            .arg(self.names.meta())
            .exec(con)
            .map_err(write_err)?;
        if self.exists(con)? {
            redis::cmd("UNWATCH").exec(con).map_err(write_err)?;
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        layout::diff(&self.names, &StoreFile::default(), file, 0.0, &mut pipe)?;
        // Versions newer than any an instance has seen (see script.lua).
        let version = chrono::Utc::now().timestamp_micros().to_string();
        for record in &file.keys {
            pipe.cmd("HSET")
                .arg(self.names.key(&record.id))
                .arg("v")
                .arg(&version);
        }
        pipe.cmd("HSET")
            .arg(self.names.meta())
            .arg("version")
            .arg(STORE_VERSION);
        pipe.cmd("PUBLISH")
            .arg(self.names.channel())
            .arg(layout::Message::reload(""));
        let done: Value = pipe.query(con).map_err(write_err)?;
        Ok(!matches!(done, Value::Nil))
    }
}
