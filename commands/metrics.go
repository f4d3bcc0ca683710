package commands

import (
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/relock/relock/locktable"
)

// metrics are the server's Prometheus collectors. Label values come from
// fixed sets (command names, error codes, release reasons), never from lock
// names or clients, so cardinality stays bounded.
type metrics struct {
	reg      *prometheus.Registry
	cmdTime  []prometheus.Observer // by command.idx
	waitTime prometheus.Histogram
	holdTime prometheus.Histogram
	errors   *prometheus.CounterVec
}

// latencyBuckets (commands) span 10 µs to ~10 s; durationBuckets (waits,
// holds) 1 ms to ~70 min.
var (
	latencyBuckets  = prometheus.ExponentialBuckets(10e-6, 4, 11)
	durationBuckets = prometheus.ExponentialBuckets(1e-3, 4, 12)
)

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	cmdTime := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "relock_command_duration_seconds", Help: "Time to execute a command (a waiting LOCK: until queued).",
		Buckets: latencyBuckets,
	}, []string{"command"})
	m.cmdTime = make([]prometheus.Observer, len(commandList))
	for _, c := range commandList {
		m.cmdTime[c.idx] = cmdTime.WithLabelValues(c.name)
	}
	m.waitTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "relock_wait_seconds", Help: "Time a LOCK waited in the queue before its grant.", Buckets: durationBuckets,
	})
	m.holdTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "relock_hold_seconds", Help: "Time from grant to release of a hold.", Buckets: durationBuckets,
	})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relock_errors_total", Help: "Error replies by error code.",
	}, []string{"code"})
	// The codes relock replies with start at 0, so that rate() and
	// increase() see the first error of each.
	for _, code := range []string{"ERR", "NOTHELD", "SIZEMISMATCH", "LIMIT", "NOAUTH", "NOPERM", "WRONGPASS", "NOPROTO", "DEADLOCK"} {
		m.errors.WithLabelValues(code)
	}

	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	st := &s.stats
	commit := Commit
	if commit == "" {
		commit = "unknown"
	}
	m.reg.MustRegister(
		cmdTime, m.waitTime, m.holdTime, m.errors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("relock_connected_clients", "Open client connections.", func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.sessions))
		}),
		gauge("relock_locks", "Locks with holders or waiters.", func() float64 { return float64(s.eng.table().Stats().Locks) }),
		gauge("relock_holds", "Held locks (a re-entered hold counts once).", func() float64 { return float64(s.eng.table().Stats().Holds) }),
		gauge("relock_waiters", "Queued LOCK requests.", func() float64 { return float64(s.eng.table().Stats().Waiters) }),
		gauge("relock_delayed_slots", "Lock capacity held back by lock-delay after involuntary releases.", func() float64 { return float64(s.eng.table().Stats().Delayed) }),
		gauge("relock_oldest_hold_age_seconds", "Age of the oldest live hold (0: none): a lock held too long shows here while it is still held.", func() float64 {
			g, ok := s.eng.table().OldestGrant()
			if !ok {
				return 0
			}
			return max(seconds(s.now()-g), 0)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relock_build_info", Help: "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": Version, "commit": commit, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		gauge("relock_last_fence", "The largest fence issued.", func() float64 { return float64(s.eng.table().LastFence()) }),
		counter("relock_connections_total", "Accepted connections.", nil, func() float64 { return float64(st.connections.Load()) }),
		counter("relock_rejected_connections_total", "Connections refused by --max-clients.", nil, func() float64 { return float64(st.rejected.Load()) }),
		counter("relock_grants_total", "Locks granted (re-entries included).", nil, func() float64 { return float64(st.grants.Load()) }),
		counter("relock_wait_timeouts_total", "LOCKs whose WAIT ran out.", nil, func() float64 { return float64(st.waitTimeouts.Load()) }),
		counter("relock_auth_failures_total", "Failed AUTH attempts.", nil, func() float64 { return float64(st.authFailures.Load()) }),
	)
	m.reg.MustRegister(
		gauge("relock_subscribers", "Connections subscribed to lock events.", func() float64 { return float64(s.hub.conns.Load()) }),
		counter("relock_events_published_total", "Lock event messages queued for subscribers.", nil, func() float64 { return float64(s.hub.published.Load()) }),
		counter("relock_subscribers_dropped_total", "Subscribers disconnected because their unsent event output passed the limit.", nil,
			func() float64 { return float64(s.hub.dropped.Load()) }),
	)
	for _, r := range []locktable.Reason{locktable.ReasonUnlock, locktable.ReasonExpired, locktable.ReasonDisconnect, locktable.ReasonForced,
		locktable.ReasonKilled, locktable.ReasonReset} {
		m.reg.MustRegister(counter("relock_releases_total", "Holds released, by reason.",
			prometheus.Labels{"reason": r.String()}, func() float64 { return float64(st.releases[r].Load()) }))
	}
	if store := s.cfg.Store; store != nil {
		m.reg.MustRegister(
			counter("relock_persist_commits_total", "Commits to the data dir.", nil, func() float64 { return float64(store.Stats().Commits) }),
			counter("relock_persist_commit_seconds_total", "Time spent in commits (with fsync).", nil, func() float64 { return store.Stats().CommitTime.Seconds() }),
			counter("relock_persist_errors_total", "Failed commits.", nil, func() float64 { return float64(store.Stats().Errors) }),
		)
	}
	return m
}

// observeError counts an error reply by its code (the first word). A first
// word that is not an upper-case code of at most 16 letters counts as
// OTHER, so that no client-supplied text can become a label value.
func (m *metrics) observeError(msg string) {
	code, _, _ := strings.Cut(msg, " ")
	if !isErrorCode(code) {
		code = "OTHER"
	}
	m.errors.WithLabelValues(code).Inc()
}

func isErrorCode(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// MetricsHandler serves /metrics (Prometheus), /healthz (the process is
// up) and /readyz (listening and not shutting down).
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		s.gate.RLock()
		stopping := s.stopping
		s.gate.RUnlock()
		if stopping {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

func seconds(ns int64) float64 { return float64(ns) / float64(time.Second) }
