//! Webhooks: job events pushed to other services, signed with the Standard
//! Webhooks scheme, from a durable outbox in the journal.
//!
//! - [`endpoints`]: the API's rules (who sees which endpoint, valid URLs);
//! - [`dispatcher`]: claims due deliveries and sends them, one queue per
//!   endpoint;
//! - [`attempt`]: one signed POST and what its answer means;
//! - [`payload`], [`signature`], [`secret`]: the message, its signature,
//!   and the secrets sealed at rest;
//! - [`url`]: which URLs an endpoint may have.

pub mod attempt;
pub mod dispatcher;
pub mod endpoints;
pub mod payload;
pub mod secret;
pub mod signature;
pub mod url;

pub use dispatcher::Dispatcher;
pub use endpoints::WebhookEndpoints;
pub use secret::SecretSealer;
pub use url::UrlRules;
