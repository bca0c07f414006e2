//! `POST /billing/repricings`, `GET /billing/repricings[/{id}]`: repricing past spend
//! (admin only), over the [`Repricings`] port and the prices in force.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use routero_core::Provider;
use routero_core::attribution::{BillingMode, WorkspaceId};
use routero_core::price::{LivePrices, layered};
use routero_core::reprice::{
    Repricing, RepricingId, RepricingRequest, RepricingScope, Repricings, apply, dry_run,
};

use super::{
    BillingApi, Principal, Problem, ProblemType, Query, Role, csv_response, day, json, problem,
};

/// What repricing needs beside the billing ports: the store and the prices in force.
#[derive(Debug, Clone)]
pub(super) struct RepricingPorts {
    pub(super) store: Arc<dyn Repricings>,
    pub(super) prices: LivePrices,
}

/// Requests per page a repricing reads and corrects in one step.
const PAGE: usize = 2_000;

/// The body of `POST /billing/repricings`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RepricingBody {
    start_date: String,
    end_date: String,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    billing_mode: Option<String>,
    /// A price file (Routero's TOML or LiteLLM's JSON), layered over the prices in
    /// force.
    prices: String,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl BillingApi {
    fn repricing_ports(&self, principal: &Principal) -> Result<&RepricingPorts, Problem> {
        if principal.role != Role::Admin {
            return Err(problem(
                ProblemType::Forbidden,
                "repricing needs the admin role",
            ));
        }
        self.repricing.as_ref().ok_or_else(|| {
            problem(
                ProblemType::NotFound,
                "repricing is not configured on this server",
            )
        })
    }

    /// Whether `principal` may see a repricing: its org's, and for a principal limited
    /// to some workspaces, one scoped to one of them.
    fn sees(principal: &Principal, repricing: &Repricing) -> bool {
        repricing.scope.org.as_ref() == Some(&principal.org)
            && principal.workspaces.as_ref().is_none_or(|list| {
                repricing
                    .scope
                    .workspace
                    .as_ref()
                    .is_some_and(|w| list.contains(w))
            })
    }

    pub(super) async fn repricings(
        &self,
        principal: &Principal,
    ) -> Result<Response<Bytes>, Problem> {
        let ports = self.repricing_ports(principal)?;
        let found: Vec<Repricing> = ports
            .store
            .repricings(Some(&principal.org))
            .await?
            .into_iter()
            .filter(|r| Self::sees(principal, r))
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "repricings": found }),
        ))
    }

    pub(super) async fn repricing(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Response<Bytes>, Problem> {
        let ports = self.repricing_ports(principal)?;
        let not_found = || problem(ProblemType::NotFound, format!("no repricing {id}"));
        let id = RepricingId::parse(id).ok_or_else(not_found)?;
        match ports.store.repricing(&id).await? {
            Some(r) if Self::sees(principal, &r) => Ok(json(StatusCode::OK, &r)),
            _ => Err(not_found()),
        }
    }

    /// The scope a body asks for, within what `principal` may reprice: its org, and
    /// for a principal limited to some workspaces, one of them.
    fn repricing_scope(
        &self,
        principal: &Principal,
        body: &RepricingBody,
    ) -> Result<RepricingScope, Problem> {
        if principal.teams.is_some() {
            return Err(problem(
                ProblemType::Forbidden,
                "a principal limited to some teams cannot reprice: a repricing covers whole workspaces",
            ));
        }
        let from = day("start_date", &body.start_date)?;
        let to = day("end_date", &body.end_date)?;
        super::checked_range(from, to, self.config.max_range_days)?;
        let mut scope = RepricingScope::days(from, to);
        scope.org = Some(principal.org.clone());
        let named = body
            .workspace
            .as_deref()
            .map(|w| {
                WorkspaceId::new(w)
                    .map_err(|e| problem(ProblemType::BadRequest, format!("workspace: {e}")))
            })
            .transpose()?;
        let visible = self.visible(principal);
        scope.workspace = match (&principal.workspaces, named) {
            (_, Some(w)) if visible.contains(&w) => Some(w),
            (_, Some(_)) => return Err(problem(ProblemType::NotFound, "no such workspace")),
            (None, None) => None,
            (Some(list), None) if list.len() == 1 => Some(list[0].clone()),
            (Some(_), None) => {
                return Err(problem(
                    ProblemType::BadRequest,
                    "workspace is required: this principal may reprice only its workspaces, one at a time",
                ));
            }
        };
        scope.provider = body
            .provider
            .as_deref()
            .map(|p| {
                Provider::parse(p)
                    .map_err(|e| problem(ProblemType::BadRequest, format!("provider: {e}")))
            })
            .transpose()?;
        scope.model = body.model.clone();
        scope.billing_mode = body
            .billing_mode
            .as_deref()
            .map(|m| {
                m.parse::<BillingMode>()
                    .map_err(|e| problem(ProblemType::BadRequest, format!("billing_mode: {e}")))
            })
            .transpose()?;
        Ok(scope)
    }

    /// `POST /billing/repricings`: a dry run's report (`"dry_run": true`; CSV with
    /// `?format=csv`), or the repricing applied and its audit record (201; 200 when it
    /// was applied before: nothing is applied twice).
    pub(super) async fn reprice(
        &self,
        principal: &Principal,
        query: &Query,
        request: &Request<Bytes>,
    ) -> Result<Response<Bytes>, Problem> {
        let ports = self.repricing_ports(principal)?;
        let body: RepricingBody = serde_json::from_slice(request.body())
            .map_err(|e| problem(ProblemType::BadRequest, format!("body: {e}")))?;
        let scope = self.repricing_scope(principal, &body)?;
        let reason = body.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(problem(
                ProblemType::BadRequest,
                "a repricing needs a reason of 1 to 500 characters",
            ));
        }
        let actor = body.actor.as_deref().map_or("api", str::trim);
        if actor.is_empty() || actor.chars().count() > 200 || actor.chars().any(char::is_control) {
            return Err(problem(
                ProblemType::BadRequest,
                "actor is 1 to 200 characters, none of them control characters",
            ));
        }
        let current = ports.prices.current();
        let prices = layered(&current, &body.prices)
            .map_err(|e| problem(ProblemType::InvalidPrices, format!("prices: {e}")))?;
        let csv = match query.get("format").map(String::as_str) {
            None | Some("json") => false,
            Some("csv") if body.dry_run => true,
            Some(other) => {
                return Err(problem(
                    ProblemType::BadRequest,
                    format!(
                        "format={other}: a dry run's report is json or csv; a repricing answers json"
                    ),
                ));
            }
        };
        let id = RepricingId::derive(&scope, prices.version());
        if body.dry_run {
            let report = dry_run(&*ports.store, &scope, &prices, PAGE).await?;
            if csv {
                return Ok(csv_response(Bytes::from(report.to_csv())));
            }
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "dry_run": true,
                    "id": id,
                    "scope": scope,
                    "prices_before": current.version(),
                    "report": report,
                }),
            ));
        }
        let existed = ports
            .store
            .repricing(&id)
            .await?
            .is_some_and(|r| r.state == routero_core::reprice::RepricingState::Applied);
        let done = apply(
            &*ports.store,
            RepricingRequest {
                scope,
                reason: reason.to_owned(),
                actor: actor.to_owned(),
                current: &current,
                prices: &prices,
            },
            PAGE,
            self.now(),
        )
        .await?;
        let status = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(json(status, &done))
    }
}
