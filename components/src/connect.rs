//! Connecting components that are created at run time to providers that already run.
//!
//! The node host creates a partition's `Ble`, `SequencePaxos` and `KvReplica` when the
//! lookup table arrives, and must wire them to the node's timer, link and overlay,
//! whatever concrete component provides those (a real or a simulated provider). A
//! [`Connector`] hides the provider's type behind the port type.

use std::sync::Arc;

use kompact::prelude::*;

/// Connects the provider's `P` port to a required port reference, and returns the
/// provider's reference for the other direction.
pub type Connector<P> = Arc<dyn Fn(RequiredRef<P>) -> ProvidedRef<P> + Send + Sync>;

/// A connector to the `P` port of `provider`.
pub fn connector<P, C>(provider: &Arc<Component<C>>) -> Connector<P>
where
    P: Port + 'static,
    C: ComponentDefinition + ProvideRef<P> + Sized + 'static,
{
    let provider = provider.clone();
    Arc::new(move |req: RequiredRef<P>| {
        provider.on_definition(|p| {
            p.connect_to_required(req);
            p.provided_ref()
        })
    })
}

/// Connect `requirer`'s `P` port to the provider behind `conn`, both ways.
pub fn connect_to<P, C>(conn: &Connector<P>, requirer: &Arc<Component<C>>)
where
    P: Port + 'static,
    C: ComponentDefinition + RequireRef<P> + Sized + 'static,
{
    requirer.on_definition(|c| {
        let prov = conn(c.required_ref());
        c.connect_to_provided(prov);
    });
}
