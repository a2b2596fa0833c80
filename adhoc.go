package verify

import (
	"context"
	"strings"
	"unicode"
)

// AdHocFlowID is the FlowID of the verifications a Send with an ad-hoc
// flow named name starts (see SendRequest.Flow): "adhoc:" + name. No
// catalog flow has such an ID.
func AdHocFlowID(name string) string { return adHocPrefix + name }

const adHocPrefix = "adhoc:"

// maxAdHocName is the longest ad-hoc flow name, in bytes.
const maxAdHocName = 100

// sendFlow returns the flow a Send runs: its ad-hoc flow, validated, or
// the catalog flow it names.
func (e *Engine) sendFlow(ctx context.Context, req SendRequest) (Flow, error) {
	if req.Flow == nil {
		return e.resolveFlow(ctx, req.FlowID)
	}
	if req.FlowID != "" {
		return Flow{}, invalid(ErrInvalidParameter, "flow_id", "flow_id names a catalog flow and flow is an ad-hoc one; give one of them")
	}
	f := *req.Flow
	switch {
	case f.ID != "":
		return Flow{}, invalid(ErrInvalidFlow, "id", "an ad-hoc flow's ID is AdHocFlowID(name); leave id empty")
	case f.Default:
		return Flow{}, invalid(ErrInvalidFlow, "default", "an ad-hoc flow cannot be the default flow")
	}
	if err := e.validateFlow(ctx, &f, true); err != nil {
		return Flow{}, err
	}
	if len(f.Name) > maxAdHocName || strings.IndexFunc(f.Name, unicode.IsControl) >= 0 {
		return Flow{}, invalid(ErrInvalidFlow, "name", "an ad-hoc flow's name is at most %d bytes of printable text", maxAdHocName)
	}
	f.ID = AdHocFlowID(f.Name)
	return f, nil
}
