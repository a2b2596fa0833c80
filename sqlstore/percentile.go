package sqlstore

import (
	"database/sql/driver"
	"fmt"
	"slices"

	"modernc.org/sqlite"
)

// SQLite has no percentile aggregate, and sorting the rows for one with
// ORDER BY ... LIMIT 1 OFFSET k costs a sort per percentile. So the store
// registers one with the SQLite driver: openverify_percentile(x, p), the
// p-th percentile (0 < p <= 100) of the non-NULL integers x by nearest rank
// (the ceil(p/100 * n)th smallest, as PostgreSQL's percentile_disc takes
// it), NULL over no rows. It keeps the values of its group and sorts them
// once at the end.
func init() {
	sqlite.MustRegisterFunction("openverify_percentile", &sqlite.FunctionImpl{
		NArgs:         2,
		Deterministic: true,
		MakeAggregate: func(sqlite.FunctionContext) (sqlite.AggregateFunction, error) { return &percentileAgg{}, nil },
	})
}

// percentileAgg is one evaluation of openverify_percentile.
type percentileAgg struct {
	values []int64
	p      int64
}

func (a *percentileAgg) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	p, ok := args[1].(int64)
	if !ok || p <= 0 || p > 100 {
		return fmt.Errorf("openverify_percentile: p must be an integer from 1 to 100, got %v", args[1])
	}
	a.p = p
	switch x := args[0].(type) {
	case nil:
	case int64:
		a.values = append(a.values, x)
	default:
		return fmt.Errorf("openverify_percentile: x must be an integer, got %T", args[0])
	}
	return nil
}

func (a *percentileAgg) WindowInverse(*sqlite.FunctionContext, []driver.Value) error {
	return fmt.Errorf("openverify_percentile is not a window function")
}

func (a *percentileAgg) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if len(a.values) == 0 {
		return nil, nil
	}
	slices.Sort(a.values)
	rank := (int(a.p)*len(a.values) + 99) / 100
	return a.values[max(rank, 1)-1], nil
}

func (a *percentileAgg) Final(*sqlite.FunctionContext) {}
