package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/orderpipe/orderpipe/internal/app"
	"github.com/orderpipe/orderpipe/internal/apptest"
	"github.com/orderpipe/orderpipe/internal/await"
	"github.com/orderpipe/orderpipe/internal/dashboard"
	"github.com/orderpipe/orderpipe/topology"
)

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		ok        bool
	}{
		{"", "text/html; charset=utf-8", true},
		{"index.html", "text/html; charset=utf-8", true},
		{"app.js", "text/javascript; charset=utf-8", true},
		{"style.css", "text/css; charset=utf-8", true},
		{"nope.js", "", false},
		{"../dashboard.go", "", false},
		{"assets/app.js", "", false},
		{"dashboard.go", "", false},
	} {
		a, ok := dashboard.Lookup(c.name)
		if ok != c.ok || a.ContentType != c.typ || ok == (len(a.Body) == 0) {
			t.Errorf("Lookup(%q): got %q, %d bytes, %v; want %q, %v", c.name, a.ContentType, len(a.Body), ok, c.typ, c.ok)
		}
	}
	// The page loads only its own files: nothing from elsewhere, nothing inline.
	page, _ := dashboard.Lookup("")
	for _, bad := range []string{"http://", "https://", "<script>", "style="} {
		if bytes.Contains(page.Body, []byte(bad)) {
			t.Errorf("index.html contains %q; want only /ui/ files, no inline code", bad)
		}
	}
}

// chromium is the browser binary: ORDERPIPE_CHROMIUM (set by .ci/run from
// scripts/ensure-chromium.sh), else the first on PATH. Without one the test
// is skipped, except in CI, where it must run.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ORDERPIPE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no chromium on PATH and ORDERPIPE_CHROMIUM unset (scripts/ensure-chromium.sh installs Debian's)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI must run the dashboard test: %s", why)
	}
	t.Skipf("skipping the dashboard test: %s", why)
	return ""
}

// artifactDir is where the screenshot goes: $ORDERPIPE_ARTIFACTS, else
// testdata/out (ignored by git).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ORDERPIPE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// pipeline is `orderpipe run` in this process, reached over HTTP.
type pipeline struct {
	base string
	http *http.Client

	mu  sync.Mutex
	ids []string // of the orders load submitted
}

// submitted returns the ids of the orders load submitted so far.
func (p *pipeline) submitted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

func (p *pipeline) do(method, path string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: %d, body not JSON: %w", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out, nil
}

var skus = []string{"UI-A", "UI-B", "UI-C", "UI-D"}

// scarce has little stock, so that some orders are rejected.
const scarce = "UI-SCARCE"

// load submits orders until ctx ends, about one every 20ms, keeping the
// ids of those accepted, and returns the first failure.
func (p *pipeline) load(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		second := skus[(n+1)%len(skus)]
		if n%5 == 4 {
			second = scarce
		}
		o := map[string]any{"customer_id": fmt.Sprintf("ui-%d", n%7), "currency": "EUR", "items": []map[string]any{
			{"sku": skus[n%len(skus)], "quantity": 1 + n%3, "unit_price_cents": 250},
			{"sku": second, "quantity": 1, "unit_price_cents": 1999},
		}}
		code, body, err := p.do("POST", "/v1/orders", o)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case code == 503 || code == 429:
			continue // shed: the edge may do that on a busy machine
		case code != 202:
			return fmt.Errorf("order %d: got %d %v, want 202", n, code, body)
		}
		p.mu.Lock()
		p.ids = append(p.ids, body["order_id"].(string))
		p.mu.Unlock()
	}
}

// TestDashboardInChromium loads /ui in headless Chromium against a running
// pipeline, submits orders, waits until the page shows the numbers moving
// (rates, totals, latency, lag, readiness), looks a confirmed order up and
// checks its journey, and keeps a screenshot.
func TestDashboardInChromium(t *testing.T) {
	bin := chromium(t)
	out := artifactDir(t)

	pg := apptest.PostgresFor(t)
	proc := apptest.StartFor(t, app.Config{PostgresURL: pg.URL(), Topology: topology.DefaultConfig()},
		app.Roles{Ingest: true, Process: true, Sink: true, EnsureTopics: true})
	p := &pipeline{base: "http://" + proc.Addr, http: &http.Client{Timeout: 30 * time.Second}}
	stock := map[string]int{scarce: 3}
	for _, s := range skus {
		stock[s] = 1_000_000
	}
	for sku, n := range stock {
		if code, body, err := p.do("PUT", "/v1/inventory/"+sku, map[string]any{"available": n}); err != nil || code != 202 {
			t.Fatalf("set stock of %s: got %d %v %v, want 202", sku, code, body, err)
		}
	}
	await.Until(t, "stock visible", 30*time.Second, func() error {
		for sku := range stock {
			if code, body, err := p.do("GET", "/v1/inventory/"+sku, nil); err != nil || code != 200 {
				return fmt.Errorf("%s: %d %v %v", sku, code, body, err)
			}
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	// Headless is among the defaults; no sandbox, as CI runs as root.
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1440, 1080))...)
	defer stopAlloc()
	bctx, stopBrowser := chromedp.NewContext(actx)
	defer stopBrowser()
	var (
		mu       sync.Mutex
		jsErrors []string
	)
	if err := chromedp.Listen(bctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = fmt.Sprintf("%s at %s:%d:%d", d.Text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
			if d.Exception != nil {
				msg += ": " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			msg = "console.error:"
			for _, a := range ev.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		mu.Lock()
		jsErrors = append(jsErrors, msg)
		mu.Unlock()
	}); err != nil {
		t.Fatalf("start chromium (%s): %v", bin, err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(p.base+"/ui"), chromedp.WaitVisible(chromedp.ID("rates"))); err != nil {
		t.Fatalf("load %s/ui in chromium: %v", p.base, err)
	}

	// Orders flow while the page is watched, until the screenshot is taken.
	loadCtx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan error, 1)
	go func() { loaded <- p.load(loadCtx) }()
	stop := sync.OnceFunc(func() {
		stopLoad()
		if err := <-loaded; err != nil {
			t.Errorf("load: %v", err)
		}
	})
	defer stop()

	// The numbers move: every stage has a rate and a total, the latency,
	// lag and readiness panels are filled, and the dead letters are
	// counted (none).
	const moving = `(() => {
		const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : ""; };
		const num = (sel) => { const t = text(sel).replace(/[^0-9.]/g, ""); return t === "" ? NaN : Number(t); };
		const v = {};
		for (const s of ["accepted", "commands", "final", "sink"]) { v["rate-" + s] = num("#rate-" + s); v["total-" + s] = num("#total-" + s); }
		v.acceptToFinalP50 = text('#latency-body tr[data-latency="accept → final"] td:nth-child(2)');
		v.finalToStoredP50 = text('#latency-body tr[data-latency="final → stored"] td:nth-child(2)');
		v.postP99 = text('#latency-body tr[data-latency="edge · POST /v1/orders"] td:nth-child(4)');
		v.lagRows = document.querySelectorAll("#lag-body tr[data-lag]").length;
		v.viewLagRows = document.querySelectorAll('#lag-body tr[data-lag="view"]').length;
		v.checks = document.querySelectorAll("#readiness-body tr[data-check]").length;
		v.readiness = text("#readiness-badge");
		v.dlq = text("#dlq-total");
		const ok = ["accepted", "commands", "final", "sink"].every((s) => v["rate-" + s] > 0 && v["total-" + s] >= 20)
			&& /ms|s$/.test(v.acceptToFinalP50) && /ms|s$/.test(v.finalToStoredP50) && /ms|s$/.test(v.postP99)
			&& v.lagRows > 0 && v.viewLagRows > 0 && v.checks > 0 && (v.readiness === "ready" || v.readiness === "degraded")
			&& v.dlq === "0";
		return ok ? JSON.stringify(v) : false;
	})()`
	seen, err := chromedp.Run(bctx, chromedp.Poll[string](moving, chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second)))
	if err != nil {
		now, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		t.Fatalf("the dashboard's numbers did not move within 90s: %v; the page shows:\n%s", err, now)
	}
	t.Logf("the dashboard shows %s", seen)

	// Look up a confirmed order that Postgres holds; the journey lists
	// every step, in order, each with its time.
	var id string
	await.Until(t, "a confirmed order stored in Postgres", 60*time.Second, func() error {
		for _, cand := range p.submitted() {
			code, body, err := p.do("GET", "/v1/orders/"+cand+"?trace=1", nil)
			if err != nil || code != 200 || body["status"] != "confirmed" {
				continue
			}
			trace, _ := body["trace"].([]any)
			if n := len(trace); n > 0 && trace[n-1].(map[string]any)["at"] != nil {
				id = cand
				return nil
			}
		}
		return errors.New("none yet")
	})
	want := []string{"accepted", "reservation_requested", "reservation_requested", "reservation_answered", "reservation_answered", "confirmed", "stored"}
	journey := `(() => {
		const steps = [...document.querySelectorAll("#journey li")];
		if (steps.length === 0 || steps.some((li) => li.querySelector(".when").textContent === "—")) return false;
		return steps.map((li) => li.dataset.step).join(",");
	})()`
	if err := chromedp.Do(bctx, chromedp.SendKeys(chromedp.ID("lookup-id"), id), chromedp.Click(chromedp.CSS("#lookup-form button"))); err != nil {
		t.Fatalf("look up order %s in the dashboard: %v", id, err)
	}
	steps, err := chromedp.Run(bctx, chromedp.Poll[string](journey, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("journey of order %s in the dashboard: %v", id, err)
	}
	status, err := chromedp.Run(bctx, chromedp.TextContent(chromedp.ID("order-status")))
	if err != nil {
		t.Fatalf("status of order %s in the dashboard: %v", id, err)
	}
	if got := strings.Split(steps, ","); !slices.Equal(got, want) || status != "confirmed" {
		t.Errorf("journey of %s: got %s %v, want confirmed %v", id, status, got, want)
	}

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(out, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the dashboard: %s", path)
	stop()
	t.Logf("%d orders submitted while the page was open", len(p.submitted()))

	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("the page reported errors: %q", jsErrors)
	}
}
