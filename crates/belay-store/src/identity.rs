//! Humans, agents, grants and credentials in SQL.

use std::collections::BTreeMap;

use belay_core::{Class, Secret};
use rusqlite::{params, Connection, OptionalExtension};

use crate::token::{new_token, token_hash, TokenKind};
use crate::{Agent, AuthError, Error, Human};

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} name `{name}` must be 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter"
        )))
    }
}

fn table(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Agent => "agents",
        TokenKind::Human => "humans",
    }
}

fn exists(c: &Connection, kind: TokenKind, name: &str) -> Result<bool, Error> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE name = ?1)",
        table(kind)
    );
    Ok(c.query_row(&sql, [name], |r| r.get(0))?)
}

pub(crate) fn add_human(
    c: &mut Connection,
    name: &str,
    now: i64,
) -> Result<(Human, Secret), Error> {
    check_name("human", name)?;
    let tx = c.transaction()?;
    if exists(&tx, TokenKind::Human, name)? {
        return Err(Error::Conflict(format!(
            "a human named `{name}` already exists"
        )));
    }
    tx.execute(
        "INSERT INTO humans (name, created_us) VALUES (?1, ?2)",
        params![name, now],
    )?;
    let (token, hash, scram) = new_token(TokenKind::Human)?;
    tx.execute(
        "INSERT INTO credentials (token_hash, kind, subject, created_us, scram) VALUES (?1, 'human', ?2, ?3, ?4)",
        params![hash, name, now, scram],
    )?;
    tx.commit()?;
    Ok((
        Human {
            name: name.to_owned(),
            created_us: now,
            revoked_us: None,
            last_used_us: None,
        },
        token,
    ))
}

pub(crate) fn humans(c: &mut Connection) -> Result<Vec<Human>, Error> {
    let mut stmt =
        c.prepare("SELECT name, created_us, revoked_us, last_used_us FROM humans ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(Human {
            name: r.get(0)?,
            created_us: r.get(1)?,
            revoked_us: r.get(2)?,
            last_used_us: r.get(3)?,
        })
    })?;
    rows.collect::<Result<_, _>>().map_err(Error::from)
}

pub(crate) fn add_agent(
    c: &mut Connection,
    name: &str,
    owner: &str,
    grants: &BTreeMap<String, Class>,
    expires_us: Option<i64>,
    now: i64,
) -> Result<(Agent, Secret), Error> {
    check_name("agent", name)?;
    for (env, class) in grants {
        if !matches!(
            class,
            Class::Read | Class::Write | Class::Ddl | Class::Destructive
        ) {
            return Err(Error::Invalid(format!(
                "grant `{env}={class}`: an agent can be granted read, write, ddl or destructive; \
                 privilege, admin and unknown actions are for the policy to decide"
            )));
        }
    }
    let tx = c.transaction()?;
    let owner_ok: Option<Option<i64>> = tx
        .query_row(
            "SELECT revoked_us FROM humans WHERE name = ?1",
            [owner],
            |r| r.get(0),
        )
        .optional()?;
    match owner_ok {
        None => {
            return Err(Error::NotFound(format!(
                "no human named `{owner}`: add them with `belay human add {owner}`"
            )))
        }
        Some(Some(_)) => {
            return Err(Error::Invalid(format!(
                "human `{owner}` is revoked and cannot own an agent"
            )))
        }
        Some(None) => {}
    }
    if exists(&tx, TokenKind::Agent, name)? {
        return Err(Error::Conflict(format!(
            "an agent named `{name}` already exists"
        )));
    }
    tx.execute(
        "INSERT INTO agents (name, owner, created_us, expires_us) VALUES (?1, ?2, ?3, ?4)",
        params![name, owner, now, expires_us],
    )?;
    for (env, class) in grants {
        tx.execute(
            "INSERT INTO grants (agent, environment, class) VALUES (?1, ?2, ?3)",
            params![name, env, class.as_str()],
        )?;
    }
    let (token, hash, scram) = new_token(TokenKind::Agent)?;
    tx.execute(
        "INSERT INTO credentials (token_hash, kind, subject, created_us, scram) VALUES (?1, 'agent', ?2, ?3, ?4)",
        params![hash, name, now, scram],
    )?;
    tx.commit()?;
    let agent = Agent {
        name: name.to_owned(),
        owner: owner.to_owned(),
        created_us: now,
        expires_us,
        revoked_us: None,
        last_used_us: None,
        grants: grants.clone(),
    };
    Ok((agent, token))
}

pub(crate) fn agents(c: &mut Connection, only: Option<&str>) -> Result<Vec<Agent>, Error> {
    let mut stmt = c.prepare(
        "SELECT name, owner, created_us, expires_us, revoked_us, last_used_us FROM agents \
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let mut agents: Vec<Agent> = stmt
        .query_map([only], |r| {
            Ok(Agent {
                name: r.get(0)?,
                owner: r.get(1)?,
                created_us: r.get(2)?,
                expires_us: r.get(3)?,
                revoked_us: r.get(4)?,
                last_used_us: r.get(5)?,
                grants: BTreeMap::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut grants = c.prepare_cached(
        "SELECT environment, class FROM grants WHERE agent = ?1 ORDER BY environment",
    )?;
    for agent in &mut agents {
        let rows = grants.query_map([&agent.name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (env, class) = row?;
            let class = class.parse::<Class>().map_err(|e| {
                Error::Storage(format!("agent `{}` has a corrupt grant: {e}", agent.name))
            })?;
            agent.grants.insert(env, class);
        }
    }
    Ok(agents)
}

pub(crate) fn revoke(
    c: &mut Connection,
    kind: TokenKind,
    name: &str,
    now: i64,
) -> Result<(), Error> {
    let tx = c.transaction()?;
    let updated = tx.execute(
        &format!(
            "UPDATE {} SET revoked_us = ?2 WHERE name = ?1 AND revoked_us IS NULL",
            table(kind)
        ),
        params![name, now],
    )?;
    if updated == 0 {
        return Err(if exists(&tx, kind, name)? {
            Error::Conflict(format!("{} `{name}` is already revoked", kind.as_str()))
        } else {
            Error::NotFound(format!("no {} named `{name}`", kind.as_str()))
        });
    }
    tx.execute(
        "UPDATE credentials SET revoked_us = ?3 WHERE kind = ?1 AND subject = ?2 AND revoked_us IS NULL",
        params![kind.as_str(), name, now],
    )?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn rotate(
    c: &mut Connection,
    kind: TokenKind,
    name: &str,
    now: i64,
) -> Result<Secret, Error> {
    let tx = c.transaction()?;
    let revoked: Option<Option<i64>> = tx
        .query_row(
            &format!("SELECT revoked_us FROM {} WHERE name = ?1", table(kind)),
            [name],
            |r| r.get(0),
        )
        .optional()?;
    match revoked {
        None => {
            return Err(Error::NotFound(format!(
                "no {} named `{name}`",
                kind.as_str()
            )))
        }
        Some(Some(_)) => {
            return Err(Error::Invalid(format!(
                "{} `{name}` is revoked; add a new one instead",
                kind.as_str()
            )))
        }
        Some(None) => {}
    }
    tx.execute(
        "UPDATE credentials SET revoked_us = ?3 WHERE kind = ?1 AND subject = ?2 AND revoked_us IS NULL",
        params![kind.as_str(), name, now],
    )?;
    let (token, hash, scram) = new_token(kind)?;
    tx.execute(
        "INSERT INTO credentials (token_hash, kind, subject, created_us, scram) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash, kind.as_str(), name, now, scram],
    )?;
    tx.commit()?;
    Ok(token)
}

/// The subject of a live credential of `kind`, or why there is none.
fn credential(
    c: &Connection,
    kind: TokenKind,
    token: &Secret,
) -> Result<Result<String, AuthError>, Error> {
    if !token.expose().starts_with(kind.prefix()) {
        return Ok(Err(AuthError::Unknown(kind.as_str())));
    }
    let row: Option<(String, Option<i64>)> = c
        .query_row(
            "SELECT subject, revoked_us FROM credentials WHERE token_hash = ?1 AND kind = ?2",
            params![token_hash(token), kind.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => Err(AuthError::Unknown(kind.as_str())),
        Some((subject, Some(_))) => Err(AuthError::Revoked(subject)),
        Some((subject, None)) => Ok(subject),
    })
}

pub(crate) fn authenticate_human(
    c: &mut Connection,
    token: &Secret,
    now: i64,
) -> Result<Result<Human, AuthError>, Error> {
    let name = match credential(c, TokenKind::Human, token)? {
        Ok(name) => name,
        Err(e) => return Ok(Err(e)),
    };
    c.execute(
        "UPDATE humans SET last_used_us = ?2 WHERE name = ?1",
        params![name, now],
    )?;
    let human = humans(c)?.into_iter().find(|h| h.name == name);
    Ok(match human {
        Some(h) if h.revoked_us.is_some() => Err(AuthError::Revoked(name)),
        Some(h) => Ok(h),
        None => Err(AuthError::Unknown("human")),
    })
}

pub(crate) fn authenticate_agent(
    c: &mut Connection,
    token: &Secret,
    now: i64,
) -> Result<Result<Agent, AuthError>, Error> {
    match credential(c, TokenKind::Agent, token)? {
        Ok(name) => login_agent(c, &name, now),
        Err(e) => Ok(Err(e)),
    }
}

/// The agent `name` if it may act now, recording the use.
pub(crate) fn login_agent(
    c: &mut Connection,
    name: &str,
    now: i64,
) -> Result<Result<Agent, AuthError>, Error> {
    let Some(agent) = agents(c, Some(name))?.into_iter().next() else {
        return Ok(Err(AuthError::Unknown("agent")));
    };
    if agent.revoked_us.is_some() {
        return Ok(Err(AuthError::Revoked(agent.name)));
    }
    if agent.expires_us.is_some_and(|e| e <= now) {
        return Ok(Err(AuthError::Expired(agent.name)));
    }
    c.execute(
        "UPDATE agents SET last_used_us = ?2 WHERE name = ?1",
        params![name, now],
    )?;
    Ok(Ok(Agent {
        last_used_us: Some(now),
        ..agent
    }))
}

pub(crate) fn agent_verifier(c: &mut Connection, name: &str) -> Result<Option<String>, Error> {
    Ok(c.prepare_cached(
        "SELECT scram FROM credentials WHERE kind = 'agent' AND subject = ?1 \
             AND revoked_us IS NULL AND scram IS NOT NULL ORDER BY created_us DESC LIMIT 1",
    )?
    .query_row([name], |r| r.get(0))
    .optional()?)
}
