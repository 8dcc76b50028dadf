package bpfobj

import (
	"reflect"
	"testing"

	"github.com/rsttrace/rsttrace/internal/record"
)

// sameLayout fails unless a and b have the same size and the same fields,
// by name, offset, size and kind, recursively.
func sameLayout(t *testing.T, path string, a, b reflect.Type) {
	t.Helper()
	if a.Size() != b.Size() || a.Kind() != b.Kind() {
		t.Errorf("%s: %v (%d bytes) vs %v (%d bytes)", path, a, a.Size(), b, b.Size())
		return
	}
	switch a.Kind() {
	case reflect.Struct:
		if a.NumField() != b.NumField() {
			t.Errorf("%s: %d fields vs %d", path, a.NumField(), b.NumField())
			return
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			p := path + "." + fa.Name
			if fa.Name != fb.Name || fa.Offset != fb.Offset {
				t.Errorf("%s: field %s at %d vs %s at %d", p, fa.Name, fa.Offset, fb.Name, fb.Offset)
				continue
			}
			sameLayout(t, p, fa.Type, fb.Type)
		}
	case reflect.Array:
		if a.Len() != b.Len() {
			t.Errorf("%s: [%d] vs [%d]", path, a.Len(), b.Len())
		}
		sameLayout(t, path+"[]", a.Elem(), b.Elem())
	}
}

// TestRecordTwin: record.Record, the hand-written twin the correlator
// reads, is the generated struct record to the byte.
func TestRecordTwin(t *testing.T) {
	sameLayout(t, "record", reflect.TypeFor[RsttraceRecord](), reflect.TypeFor[record.Record]())
}

// TestRecordTags: every record type and flag has its C value, and the
// twin knows every tag the C header defines.
func TestRecordTags(t *testing.T) {
	types := map[RsttraceRecordType]record.Type{
		RsttraceRecordTypeRECORD_RESET_SENT:     record.ResetSent,
		RsttraceRecordTypeRECORD_CLIENT_REFUSED: record.ClientRefused,
		RsttraceRecordTypeRECORD_LISTEN:         record.Listen,
		RsttraceRecordTypeRECORD_LISTEN_CLOSE:   record.ListenClose,
		RsttraceRecordTypeRECORD_BIND:           record.Bind,
		RsttraceRecordTypeRECORD_LISTEN_UPDATE:  record.ListenUpdate,
		RsttraceRecordTypeRECORD_FW_DROP:        record.FirewallDrop,
		RsttraceRecordTypeRECORD_CONNECT_FAILED: record.ConnectFailed,
		RsttraceRecordTypeRECORD_SYN_RETRANS:    record.SynRetransmit,
		RsttraceRecordTypeRECORD_RST_OUT:        record.ResetOut,
		RsttraceRecordTypeRECORD_RST_IN:         record.ResetIn,
	}
	for c, g := range types {
		if uint32(c) != uint32(g) {
			t.Errorf("record type %d in C is %d in Go", c, g)
		}
	}
	if len(types) != len(record.Types) {
		t.Errorf("C has %d record types, record.Types %d", len(types), len(record.Types))
	}
	flags := map[RsttraceRecordFlag]record.Flag{
		RsttraceRecordFlagRECORD_F_PROC_KNOWN:  record.FlagProcKnown,
		RsttraceRecordFlagRECORD_F_EXITING:     record.FlagExiting,
		RsttraceRecordFlagRECORD_F_NO_SKB:      record.FlagNoSkb,
		RsttraceRecordFlagRECORD_F_HAS_SK:      record.FlagHasSk,
		RsttraceRecordFlagRECORD_F_V6ONLY:      record.FlagV6Only,
		RsttraceRecordFlagRECORD_F_FW_ICMP:     record.FlagFirewallICMP,
		RsttraceRecordFlagRECORD_F_FW_NFT:      record.FlagFirewallNFT,
		RsttraceRecordFlagRECORD_F_CURRENT:     record.FlagCurrent,
		RsttraceRecordFlagRECORD_F_OWNER_KNOWN: record.FlagOwnerKnown,
		RsttraceRecordFlagRECORD_F_NAT:         record.FlagNAT,
		RsttraceRecordFlagRECORD_F_SENDER_SEEN: record.FlagSenderSeen,
		RsttraceRecordFlagRECORD_F_SELF_ABORT:  record.FlagSelfAbort,
	}
	for c, g := range flags {
		if uint32(c) != g {
			t.Errorf("record flag %#x in C is %#x in Go", c, g)
		}
	}
	if len(flags) != len(record.Flags) {
		t.Errorf("C has %d record flags, record.Flags %d", len(flags), len(record.Flags))
	}
	hooks := map[RsttraceNfHookId]record.HookID{
		RsttraceNfHookIdNF_HOOK_ID_UNKNOWN:     record.HookUnknown,
		RsttraceNfHookIdNF_HOOK_ID_PREROUTING:  record.HookPrerouting,
		RsttraceNfHookIdNF_HOOK_ID_INPUT:       record.HookInput,
		RsttraceNfHookIdNF_HOOK_ID_FORWARD:     record.HookForward,
		RsttraceNfHookIdNF_HOOK_ID_OUTPUT:      record.HookOutput,
		RsttraceNfHookIdNF_HOOK_ID_POSTROUTING: record.HookPostrouting,
		RsttraceNfHookIdNF_HOOK_ID_NFT:         record.HookNFT,
	}
	for c, g := range hooks {
		if uint32(c) != uint32(g) {
			t.Errorf("netfilter hook id %d in C is %d in Go", c, g)
		}
	}
}
