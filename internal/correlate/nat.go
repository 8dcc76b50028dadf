package correlate

import (
	"github.com/rsttrace/rsttrace/events"
	"github.com/rsttrace/rsttrace/internal/record"
)

// Address translation. A refusal through DNAT (a published port, a
// Kubernetes Service) has two 4-tuples: the client connected to the
// service address, the backend refused a SYN to its own address, and with
// masquerade from another source too. The kernel caught the translation
// while the SYN was in flight (record.FlagNAT): the refusing side's record
// carries the connection as the client made it. The refusal is keyed by
// that original tuple, so the client's record (whose socket says client ->
// service) joins it, and one event names both destinations.

// natKey is the connection of a translated refusal as the client made it:
// the key its client-side record has.
func natKey(r *record.Record) tuple {
	src := record.Addr(r.Family, &r.OrigSaddr).Unmap()
	dst := record.Addr(r.Family, &r.OrigDaddr).Unmap()
	return tuple{
		src: src.As16(), dst: dst.As16(),
		sport: r.OrigSport, dport: r.OrigDport,
		src4: src.Is4(), dst4: dst.Is4(),
	}
}

// translated makes p, a refusal keyed by the original tuple, name the
// destination the refusing side saw (the backend, where the cause is
// classified) and keep the one the client used as DstOriginal. Src stays
// the client as it connected (the original source, before masquerade).
func translated(p *refusal, r *record.Record) {
	p.orig = p.dst
	p.dst = events.Endpoint{Addr: record.Addr(r.Family, &r.Daddr).Unmap(), Port: r.Dport}
	p.ev.DstOriginal = &p.orig
}

// joinedClient completes a refusal with its client-side record: the
// client's namespace when it differs from the refusing side's (a
// translated connection, or a proxy's connection to a backend in another
// namespace), and the explanation again where it names the client.
func (c *Correlator) joinedClient(p *refusal, r *record.Record) {
	p.clientNetns = r.Netns
	if p.ev.Cause == events.CauseOtherNetns && r.Netns != p.ev.Netns {
		// The client reached this namespace from another one (routed,
		// through a bridge or a proxy): that a third namespace listens
		// on the port says nothing about this connection.
		p.ev.Cause, p.ev.Listener = events.CauseNoListener, nil
		p.ev.Explanation = events.Explain(&p.ev)
	}
	if p.ev.DstOriginal != nil {
		if r.Netns != p.ev.Netns {
			p.ev.ClientNetns = r.Netns
		}
		p.ev.Explanation = events.Explain(&p.ev)
	}
}
