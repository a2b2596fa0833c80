package sqlstore

import "github.com/openverify/verify"

// ReportQuery is one SQL statement with its arguments.
type ReportQuery struct {
	SQL  string
	Args []any
}

// ReportQueries returns the statements ListVerifications (its first page)
// and Stats run for q, by name, for the query-plan tests.
func (s *Store) ReportQueries(q verify.Query) map[string]ReportQuery {
	list, args := s.listQuery(q, verify.Cursor{}, 51)
	next, nextArgs := s.listQuery(q, verify.Cursor{CreatedAt: q.From, ID: "x"}, 51)
	sq := s.statsQueries(q)
	return map[string]ReportQuery{
		"list":           {list, args},
		"list-next":      {next, nextArgs},
		"stats-statuses": {sq.statuses, sq.args},
		"stats-channels": {sq.channels, sq.args},
		"stats-medians":  {sq.medians, sq.args},
	}
}
