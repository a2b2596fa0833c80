package faults

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openverify/verify"
)

// delivery is one message as a worker's channel POSTs it to the sink. It
// carries the code: the sink plays the provider and the recipient.
type delivery struct {
	ID             string           `json:"id"`
	VerificationID string           `json:"verification_id"`
	Step           int              `json:"step"`
	Channel        string           `json:"channel"`
	Code           string           `json:"code"`
	To             verify.Recipient `json:"to"`
	Worker         int              `json:"worker"`
	PID            int              `json:"pid"`

	At time.Time `json:"-"` // when the sink received it
}

// ticket is what the sink hands a worker's sender: one Send to make.
type ticket struct {
	N     int64            `json:"n"`
	To    verify.Recipient `json:"to"`
	Check bool             `json:"check"` // after a successful Send, Check a wrong code
}

// report is a worker's account of one call.
type report struct {
	Worker int    `json:"worker"`
	PID    int    `json:"pid"`
	Ticket int64  `json:"ticket"`
	Op     string `json:"op"` // "send" or "check"
	ID     string `json:"id,omitempty"`
	Class  string `json:"class"` // see classify
	Code   string `json:"code,omitempty"`
	Err    string `json:"err,omitempty"`

	At time.Time `json:"-"` // when the sink received it
}

// issued is the parent's record of a ticket.
type issued struct {
	ticket
	pid       int
	at        time.Time
	send      *report // nil until reported
	check     *report
	abandoned bool // its worker was killed
}

// settled reports whether every call of the ticket has been reported.
func (i *issued) settled() bool {
	if i.abandoned {
		return true
	}
	if i.send == nil {
		return false
	}
	return !i.Check || i.send.Class != classOK || i.check != nil
}

// sink is the HTTP server in the parent that the workers' channels deliver
// to and that hands out work and takes reports:
//
//	POST /deliver  a message (delivery); answered 200 after the configured delay
//	POST /ticket   the next Send to make (ticket), or 204 when there is none now
//	POST /report   the outcome of a call (report)
//	POST /ready    ?pid=: the worker is up
type sink struct {
	srv *httptest.Server

	mu         sync.Mutex
	deliveries map[string][]delivery // by Message.ID
	order      []string              // Message.IDs in order of first delivery
	codes      map[string]string     // verification ID → code
	inflight   map[int]int           // pid → deliveries received and not yet answered
	held       map[int][]string      // pid → the Message.IDs of those deliveries
	peak       int                   // most deliveries in flight at once, from workers
	slowMin    time.Duration         // delay for workers' deliveries
	slowMax    time.Duration
	left       int // tickets still to hand out; negative: no limit
	next       int64
	check      bool // tickets ask for a wrong-code Check
	tickets    map[int64]*issued
	reports    []report
	ready      map[int]bool
}

func newSink(t *testing.T) *sink {
	s := &sink{
		deliveries: make(map[string][]delivery),
		codes:      make(map[string]string),
		inflight:   make(map[int]int),
		held:       make(map[int][]string),
		tickets:    make(map[int64]*issued),
		ready:      make(map[int]bool),
		next:       1,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deliver", s.deliver)
	mux.HandleFunc("POST /ticket", s.ticket)
	mux.HandleFunc("POST /report", s.report)
	mux.HandleFunc("POST /ready", s.markReady)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) URL() string { return s.srv.URL }

func (s *sink) deliver(w http.ResponseWriter, r *http.Request) {
	var d delivery
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.At = time.Now()
	s.mu.Lock()
	if len(s.deliveries[d.ID]) == 0 {
		s.order = append(s.order, d.ID)
	}
	s.deliveries[d.ID] = append(s.deliveries[d.ID], d)
	s.codes[d.VerificationID] = d.Code
	var delay time.Duration
	if d.Worker > 0 { // the parent's own deliveries are never slowed
		s.inflight[d.PID]++
		s.held[d.PID] = append(s.held[d.PID], d.ID)
		n := 0
		for _, c := range s.inflight {
			n += c
		}
		s.peak = max(s.peak, n)
		delay = s.slowMin
		if s.slowMax > s.slowMin {
			delay += rand.N(s.slowMax - s.slowMin)
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done(): // the worker gave up, or died
			t.Stop()
		}
	}
	if d.Worker > 0 {
		s.mu.Lock()
		s.inflight[d.PID]--
		if i := slices.Index(s.held[d.PID], d.ID); i >= 0 {
			s.held[d.PID] = slices.Delete(s.held[d.PID], i, i+1)
		}
		s.mu.Unlock()
	}
	fmt.Fprintf(w, `{"provider_id":"sink-%s"}`, d.ID)
}

func (s *sink) ticket(w http.ResponseWriter, r *http.Request) {
	pid, _ := strconv.Atoi(r.URL.Query().Get("pid"))
	s.mu.Lock()
	if s.left == 0 {
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if s.left > 0 {
		s.left--
	}
	n := s.next
	s.next++
	tk := ticket{N: n, To: recipient(n), Check: s.check}
	s.tickets[n] = &issued{ticket: tk, pid: pid, at: time.Now()}
	s.mu.Unlock()
	_ = json.NewEncoder(w).Encode(tk)
}

// recipient is the n-th ticket's recipient, each with a number prefix of
// its own, since the engine limits sends per prefix.
func recipient(n int64) verify.Recipient {
	return verify.Recipient{Phone: fmt.Sprintf("+4%07d1234", n%10_000_000), Email: fmt.Sprintf("user%d@example.com", n)}
}

func (s *sink) report(w http.ResponseWriter, r *http.Request) {
	var rep report
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rep.At = time.Now()
	s.mu.Lock()
	s.reports = append(s.reports, rep)
	if tk := s.tickets[rep.Ticket]; tk != nil {
		switch rep.Op {
		case opSend:
			tk.send = &rep
		case opCheck:
			tk.check = &rep
		}
	}
	s.mu.Unlock()
}

func (s *sink) markReady(w http.ResponseWriter, r *http.Request) {
	pid, _ := strconv.Atoi(r.URL.Query().Get("pid"))
	s.mu.Lock()
	s.ready[pid] = true
	s.mu.Unlock()
}

func (s *sink) isReady(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready[pid]
}

// setDelay makes the sink answer each worker's delivery after a random
// delay in [lo, hi).
func (s *sink) setDelay(lo, hi time.Duration) {
	s.mu.Lock()
	s.slowMin, s.slowMax = lo, hi
	s.mu.Unlock()
}

// setTickets sets how many more Sends the workers get to make: 0 pauses
// them, a negative n lets them go on until told otherwise.
func (s *sink) setTickets(n int, check bool) {
	s.mu.Lock()
	s.left, s.check = n, check
	s.mu.Unlock()
}

// issuedCount is how many tickets were handed out.
func (s *sink) issuedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tickets)
}

// ticketsLeft is how many tickets are still to be handed out.
func (s *sink) ticketsLeft() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.left
}

// abandon forgets the unreported tickets of a killed worker.
func (s *sink) abandon(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tk := range s.tickets {
		if tk.pid == pid && !tk.settled() {
			tk.abandoned = true
		}
	}
}

// settled reports whether every ticket handed out has been reported on
// (or abandoned).
func (s *sink) settled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tk := range s.tickets {
		if !tk.settled() {
			return false
		}
	}
	return true
}

// whileInflight calls fn while a delivery from pid is held by the sink,
// unanswered, and returns the Message.IDs held then; nil if pid had no
// delivery in flight within d.
func (s *sink) whileInflight(pid int, d time.Duration, fn func()) []string {
	var ids []string
	poll(d, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight[pid] == 0 {
			return false
		}
		fn()
		ids = slices.Clone(s.held[pid])
		return true
	})
	return ids
}

// reportsSince returns the reports received at or after since.
func (s *sink) reportsSince(since time.Time) []report {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []report
	for _, r := range s.reports {
		if !r.At.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// ticketsFrom returns a copy of the tickets numbered from n on.
func (s *sink) ticketsFrom(n int64) []issued {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []issued
	for _, tk := range s.tickets {
		if tk.N >= n {
			out = append(out, *tk)
		}
	}
	return out
}

// nextTicket is the number the next ticket will get.
func (s *sink) nextTicket() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// count returns how many times the message with ID id was delivered.
func (s *sink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.deliveries[id])
}

// code returns the code the messages of a verification carried.
func (s *sink) code(verificationID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.codes[verificationID]
	return c, ok
}

// duplicates returns the messages delivered more than once, with their
// deliveries, and how many deliveries beyond the first there were.
func (s *sink) duplicates() (map[string][]delivery, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]delivery)
	extra := 0
	for id, ds := range s.deliveries {
		if len(ds) > 1 {
			out[id] = append([]delivery(nil), ds...)
			extra += len(ds) - 1
		}
	}
	return out, extra
}

// deliveredTo returns the deliveries addressed to the phone number.
func (s *sink) deliveredTo(phone string) []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery
	for _, ds := range s.deliveries {
		for _, d := range ds {
			if d.To.Phone == phone {
				out = append(out, d)
			}
		}
	}
	return out
}

// stats returns how many deliveries the sink received, by worker, and the
// most it held at once.
func (s *sink) stats() (total int, byWorker map[int]int, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byWorker = make(map[int]int)
	for _, ds := range s.deliveries {
		for _, d := range ds {
			total++
			byWorker[d.Worker]++
		}
	}
	return total, byWorker, s.peak
}
