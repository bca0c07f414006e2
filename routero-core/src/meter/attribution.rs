//! Who spent: the org, workspace, team, API key, user and customer of a request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest identifier Routero accepts, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The most tags one request may carry.
pub const MAX_TAGS: usize = 16;

/// An identifier that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// Empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// Longer than [`MAX_ID_LEN`] bytes.
    #[error("{kind} id is {len} bytes long (at most {MAX_ID_LEN})")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// Holds a control character (never reflected into headers, logs or SQL).
    #[error("{kind} id contains a control character at byte {at}")]
    ControlCharacter {
        /// Which kind of id.
        kind: &'static str,
        /// Where.
        at: usize,
    },
    /// More than [`MAX_TAGS`] tags.
    #[error("{count} tags (at most {MAX_TAGS})")]
    TooManyTags {
        /// How many were given.
        count: usize,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong {
            kind,
            len: value.len(),
        });
    }
    if let Some((at, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(InvalidId::ControlCharacter { kind, at });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Validated at construction: 1 to [`MAX_ID_LEN`] bytes, no control characters.
        /// Cloning shares the text.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn new(value: &str) -> Result<$name, InvalidId> {
                validate($kind, value)?;
                Ok($name(Arc::from(value)))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// An organisation: the tenant, the boundary no query crosses.
    OrgId,
    "org"
);
id_type!(
    /// A workspace inside an org: where billing mode and wallet live.
    WorkspaceId,
    "workspace"
);
id_type!(
    /// A team inside an org.
    TeamId,
    "team"
);
id_type!(
    /// A gateway API key.
    ApiKeyId,
    "api key"
);
id_type!(
    /// A user of the org.
    UserId,
    "user"
);
id_type!(
    /// An end customer of the org (LiteLLM calls them end users).
    CustomerId,
    "customer"
);
id_type!(
    /// A provider credential: the key a request was sent upstream with.
    CredentialId,
    "credential"
);
id_type!(
    /// A request, unique per gateway: the idempotency key of its spend.
    RequestId,
    "request"
);

/// Free-form tags of a request (`env=prod`, `feature=search`): at most
/// [`MAX_TAGS`], keys and values validated like ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    /// Validates a set of tags.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        tags: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Tags, InvalidId> {
        let mut map = BTreeMap::new();
        for (k, v) in tags {
            validate("tag key", k.as_ref())?;
            validate("tag value", v.as_ref())?;
            map.insert(k.as_ref().to_owned(), v.as_ref().to_owned());
        }
        if map.len() > MAX_TAGS {
            return Err(InvalidId::TooManyTags { count: map.len() });
        }
        Ok(Tags(map))
    }

    /// The tags, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The six dimensions spend is attributed to: org and workspace always, team, API
/// key, user and end customer where the request had them. One struct for every place
/// that keeps them: an [`Attribution`], a rollup's key, a request-log row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dimensions {
    /// The organisation.
    pub org: OrgId,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The team, if any.
    pub team: Option<TeamId>,
    /// The gateway API key, if any.
    pub api_key: Option<ApiKeyId>,
    /// The user, if any.
    pub user: Option<UserId>,
    /// The end customer, if any.
    pub customer: Option<CustomerId>,
}

impl Dimensions {
    /// An org and workspace only.
    pub fn new(org: OrgId, workspace: WorkspaceId) -> Dimensions {
        Dimensions {
            org,
            workspace,
            team: None,
            api_key: None,
            user: None,
            customer: None,
        }
    }
}

/// Who a request's spend belongs to: its [`Dimensions`] and free-form tags.
///
/// Org and workspace are required; the other dimensions are optional (a request made
/// with a key that belongs to no team has no team). It serialises flat: the
/// dimensions' fields and `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribution {
    /// The dimensions.
    #[serde(flatten)]
    pub who: Dimensions,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Attribution {
    /// An attribution to an org and workspace only.
    pub fn new(org: OrgId, workspace: WorkspaceId) -> Attribution {
        Attribution {
            who: Dimensions::new(org, workspace),
            tags: Tags::default(),
        }
    }

    /// With a team.
    pub fn with_team(mut self, team: TeamId) -> Attribution {
        self.who.team = Some(team);
        self
    }

    /// With an API key.
    pub fn with_api_key(mut self, key: ApiKeyId) -> Attribution {
        self.who.api_key = Some(key);
        self
    }

    /// With a user.
    pub fn with_user(mut self, user: UserId) -> Attribution {
        self.who.user = Some(user);
        self
    }

    /// With an end customer.
    pub fn with_customer(mut self, customer: CustomerId) -> Attribution {
        self.who.customer = Some(customer);
        self
    }

    /// With tags.
    pub fn with_tags(mut self, tags: Tags) -> Attribution {
        self.tags = tags;
        self
    }
}

/// How a request's spend is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    /// The platform's provider keys: passed through at list price with zero markup,
    /// debited from the workspace wallet and itemised on the monthly invoice.
    Managed,
    /// The customer's own provider keys: tracked and attributed the same way, never
    /// debited; the invoice carries the subscription only.
    Byok,
}

impl BillingMode {
    /// `managed` or `byok`.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingMode::Managed => "managed",
            BillingMode::Byok => "byok",
        }
    }
}

impl fmt::Display for BillingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for BillingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "managed" => Ok(BillingMode::Managed),
            "byok" => Ok(BillingMode::Byok),
            other => Err(format!(
                "unknown billing mode \"{}\" (managed or byok)",
                other.escape_debug()
            )),
        }
    }
}

/// Which billing mode applies: set per workspace, overridable per provider credential,
/// so one workspace can mix both.
#[derive(Debug, Clone, Default)]
pub struct BillingPolicy {
    default: Option<BillingMode>,
    workspaces: std::collections::HashMap<WorkspaceId, BillingMode>,
    credentials: std::collections::HashMap<CredentialId, BillingMode>,
}

impl BillingPolicy {
    /// A policy whose workspaces default to `mode`.
    pub fn new(default: BillingMode) -> BillingPolicy {
        BillingPolicy {
            default: Some(default),
            ..BillingPolicy::default()
        }
    }

    /// Sets a workspace's mode.
    pub fn set_workspace(&mut self, workspace: WorkspaceId, mode: BillingMode) -> &mut Self {
        self.workspaces.insert(workspace, mode);
        self
    }

    /// Overrides the mode of requests sent with one provider credential.
    pub fn set_credential(&mut self, credential: CredentialId, mode: BillingMode) -> &mut Self {
        self.credentials.insert(credential, mode);
        self
    }

    /// The mode of a request: the credential's override, else the workspace's mode,
    /// else the default; `None` when nothing is configured, which a gateway must treat
    /// as a configuration error rather than guess.
    pub fn mode_for(
        &self,
        workspace: &WorkspaceId,
        credential: Option<&CredentialId>,
    ) -> Option<BillingMode> {
        credential
            .and_then(|c| self.credentials.get(c))
            .or_else(|| self.workspaces.get(workspace))
            .copied()
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(OrgId::new("acme").is_ok());
        assert!(matches!(OrgId::new(""), Err(InvalidId::Empty { .. })));
        assert!(matches!(
            TeamId::new(&"x".repeat(129)),
            Err(InvalidId::TooLong { .. })
        ));
        assert!(matches!(
            ApiKeyId::new("key\r\nSet-Cookie: x"),
            Err(InvalidId::ControlCharacter { at: 3, .. })
        ));
        assert!(
            UserId::new("ünïcode; DROP TABLE users;--").is_ok(),
            "SQL is data, not code"
        );
        let parsed: Result<CustomerId, _> = serde_json::from_str("\"a\\u0000b\"");
        assert!(parsed.is_err());
        assert!(Tags::new((0..17).map(|i| (format!("k{i}"), "v"))).is_err());
    }

    #[test]
    fn billing_mode_by_credential_then_workspace() {
        let ws = WorkspaceId::new("ws").unwrap();
        let other = WorkspaceId::new("other").unwrap();
        let own_key = CredentialId::new("cust-openai-key").unwrap();
        let mut policy = BillingPolicy::new(BillingMode::Managed);
        policy.set_workspace(ws.clone(), BillingMode::Managed);
        policy.set_credential(own_key.clone(), BillingMode::Byok);
        assert_eq!(policy.mode_for(&ws, None), Some(BillingMode::Managed));
        assert_eq!(
            policy.mode_for(&ws, Some(&own_key)),
            Some(BillingMode::Byok)
        );
        assert_eq!(policy.mode_for(&other, None), Some(BillingMode::Managed));
        assert_eq!(BillingPolicy::default().mode_for(&other, None), None);
    }
}
