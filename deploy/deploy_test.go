// Package deploy holds deployment files (systemd, Redis, MariaDB, Prometheus);
// its tests check them against the code.
package deploy

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/flashgrab/flashgrab/api"
	"github.com/flashgrab/flashgrab/settle"
)

const alertsFile = "prometheus/flashgrab-alerts.yml"

// prometheusOwn are the series Prometheus records itself for every target.
var prometheusOwn = []string{"up"}

// serveRegistry is the registry of `flashgrab serve`, built as serve builds
// it: the Go and process collectors, the settler's metrics, and the API's,
// which the server registers when its handler is made.
func serveRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	settle.NewMetrics(reg)
	(&api.Server{Registry: reg}).Handler()
	return reg
}

// registered reports whether reg holds a metric named name. A vector with no
// label values yet gathers nothing, so Gather cannot tell; registering a
// probe under the name can: the registry refuses a second descriptor with a
// taken name and another help string.
func registered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	probe := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: "probe: is this name taken?"})
	err := reg.Register(probe)
	if err == nil {
		reg.Unregister(probe)
		return false
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) || strings.Contains(err.Error(), "same fully-qualified name") {
		return true
	}
	t.Fatalf("probing metric name %s: %v", name, err)
	return false
}

// exported reports whether flashgrab serve exports the series name: a
// registered metric, or a histogram's _bucket, _sum or _count.
func exported(t *testing.T, reg *prometheus.Registry, name string) bool {
	if registered(t, reg, name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && registered(t, reg, base) {
			return true
		}
	}
	return false
}

// TestAlertRulesUseExportedMetrics parses the alert rules with Prometheus's
// own rule parser (syntax, PromQL, annotation templates) and checks that
// every metric an expression reads is one flashgrab serve exports, so no
// alert silently watches a series that never exists.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s: %v", alertsFile, errors.Join(errs...))
	}
	reg := serveRegistry()
	for _, name := range []string{"flashgrab_settle_dead_letters_total", "flashgrab_grabs_total", "flashgrab_settle_lag_seconds_bucket", "go_goroutines"} {
		if !exported(t, reg, name) {
			t.Fatalf("the registry does not hold %s: the check below would refuse every rule", name)
		}
	}
	if exported(t, reg, "flashgrab_no_such_metric_total") {
		t.Fatal("the registry claims a metric nobody registered: the check below would accept anything")
	}

	alerts := map[string]bool{}
	used := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without alert name (recording rules are not expected here)", g.Name)
				continue
			}
			alerts[r.Alert] = true
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("alert %s: %v", r.Alert, err)
			}
			for _, sel := range parser.ExtractSelectors(expr) {
				name := ""
				for _, m := range sel {
					if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
						name = m.Value
					}
				}
				if name == "" {
					t.Errorf("alert %s selects series without an exact metric name: %v", r.Alert, sel)
					continue
				}
				used[name] = true
				if !slices.Contains(prometheusOwn, name) && !exported(t, reg, name) {
					t.Errorf("alert %s reads %s, which flashgrab does not export", r.Alert, name)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: want a severity label and a summary annotation", r.Alert)
			}
		}
	}
	// The alerts the operator's runbook (deploy/README.md) names.
	for _, a := range []string{"FlashgrabDown", "FlashgrabNotReady", "FlashgrabHigh5xxRate", "FlashgrabSettleLagHigh",
		"FlashgrabSettleFailing", "FlashgrabSettleDeadLetters", "FlashgrabRefundFailed"} {
		if !alerts[a] {
			t.Errorf("no alert %s in %s", a, alertsFile)
		}
	}
	for _, m := range []string{"flashgrab_settle_dead_letters_total", "flashgrab_refunds_total", "flashgrab_settle_lag_seconds_bucket",
		"flashgrab_http_requests_total"} {
		if !used[m] {
			t.Errorf("no alert reads %s", m)
		}
	}
}
