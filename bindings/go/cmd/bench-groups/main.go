// Command bench-groups runs embraft's Go runtime and dragonboat side by
// side with the same shape: three replicas of every group in this process
// (three embraft runtimes or three dragonboat NodeHosts, talking over TCP
// on 127.0.0.1), every write synced to disk, an in-memory key/value state
// machine, proposers kept busy over 1, 64 or 1,024 groups. It prints a
// table, or with -json one JSON object with a `configs` list.
//
// Only one library runs at a time, so the process's CPU time over a
// window is that library's; within a run both libraries are measured back
// to back, in alternating order from run to run, so a ratio compares
// figures taken under the same machine weather. Figures are medians over
// -runs runs; each ratio is the median of the per-run ratios.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

type system struct {
	name  string
	start func(s settings, dir string, groups int) (cluster, error)
}

var systems = map[string]system{
	"embraft":    {"embraft", startEmbraft},
	"dragonboat": {"dragonboat", startDragonboat},
}

// configResult is one item of the JSON `configs` list.
type configResult struct {
	Groups                    int     `json:"groups"`
	PayloadBytes              int     `json:"payload_bytes"`
	Proposers                 int     `json:"proposers"`
	EmbraftProposalsPerSec    float64 `json:"embraft_proposals_per_sec"`
	DragonboatProposalsPerSec float64 `json:"dragonboat_proposals_per_sec"`
	Ratio                     float64 `json:"ratio"`
	EmbraftP50Micros          float64 `json:"embraft_p50_us"`
	EmbraftP99Micros          float64 `json:"embraft_p99_us"`
	DragonboatP50Micros       float64 `json:"dragonboat_p50_us"`
	DragonboatP99Micros       float64 `json:"dragonboat_p99_us"`
	P99Ratio                  float64 `json:"p99_ratio"`
	EmbraftCPUMicros          float64 `json:"embraft_cpu_us_per_proposal"`
	DragonboatCPUMicros       float64 `json:"dragonboat_cpu_us_per_proposal"`
	CPURatio                  float64 `json:"cpu_ratio"`
	Runs                      []run   `json:"runs"`
}

// run is one run of a configuration: both libraries, back to back.
type run struct {
	Embraft    *measurement `json:"embraft,omitempty"`
	Dragonboat *measurement `json:"dragonboat,omitempty"`
	Ratio      float64      `json:"ratio,omitempty"`
	P99Ratio   float64      `json:"p99_ratio,omitempty"`
	CPURatio   float64      `json:"cpu_ratio,omitempty"`
}

type report struct {
	Settings      settings             `json:"settings"`
	WarmupSeconds float64              `json:"warmup_seconds"`
	Seconds       float64              `json:"seconds_per_measurement"`
	Runs          int                  `json:"runs"`
	CPUs          int                  `json:"cpus"`
	LoadBefore    string               `json:"load_average_before"`
	LoadAfter     string               `json:"load_average_after"`
	Startup       map[string][]float64 `json:"startup_seconds"` // "library/groups" -> each start until every group had a leader
	Configs       []configResult       `json:"configs"`
}

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-groups:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var (
		jsonOut   = flag.Bool("json", false, "print one JSON object instead of a table")
		duration  = flag.Duration("duration", 5*time.Second, "measured time per library and configuration")
		warmup    = flag.Duration("warmup", 2*time.Second, "time with proposers running before each measurement")
		groupsArg = flag.String("groups", "1,64,1024", "comma-separated group counts")
		sizesArg  = flag.String("payloads", "16,1024", "comma-separated proposal sizes in bytes (at least 8: the key)")
		proposers = flag.Int("proposers", 256, "concurrent proposers, spread over the groups")
		runs      = flag.Int("runs", 1, "runs of every configuration (medians are reported)")
		only      = flag.String("systems", "embraft,dragonboat", "which libraries to run")
		dirArg    = flag.String("dir", "", "parent of the data directories (default: the system's temp dir; must be a real disk for the syncs to mean anything)")
		tick      = flag.Duration("tick", 100*time.Millisecond, "tick interval (embraft TickInterval, dragonboat RTTMillisecond)")
		election  = flag.Int("election-ticks", 10, "election timeout in ticks (dragonboat ElectionRTT)")
		heartbeat = flag.Int("heartbeat-ticks", 1, "heartbeat interval in ticks (dragonboat HeartbeatRTT)")
		workers   = flag.Int("workers", 2, "embraft runtime worker threads per runtime")
		dbShards  = flag.Uint64("dragonboat-logdb-shards", 0, "Pebble instances per dragonboat NodeHost (0: its default, 16)")
		snapEvery = flag.Uint64("snapshot-entries", 10000, "entries between two snapshots of a replica, on both sides")
		verbose   = flag.Bool("v", false, "progress and the libraries' logs on stderr")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	groupCounts, err := parseInts(*groupsArg, 1)
	if err != nil {
		return fmt.Errorf("-groups: %w", err)
	}
	sizes, err := parseInts(*sizesArg, 8)
	if err != nil {
		return fmt.Errorf("-payloads: %w", err)
	}
	var chosen []system
	for _, name := range strings.Split(*only, ",") {
		s, ok := systems[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("-systems: unknown library %q (embraft, dragonboat)", name)
		}
		chosen = append(chosen, s)
	}
	switch {
	case *proposers < 1:
		return fmt.Errorf("-proposers %d: at least 1", *proposers)
	case *runs < 1:
		return fmt.Errorf("-runs %d: at least 1", *runs)
	case *duration <= 0 || *warmup < 0:
		return fmt.Errorf("-duration must be positive and -warmup not negative")
	case *tick < time.Millisecond || *tick%time.Millisecond != 0:
		return fmt.Errorf("-tick %v: a whole number of milliseconds", *tick)
	case *election <= *heartbeat || *heartbeat < 1:
		return fmt.Errorf("-election-ticks %d must exceed -heartbeat-ticks %d (at least 1)", *election, *heartbeat)
	case *workers < 1:
		return fmt.Errorf("-workers %d: at least 1", *workers)
	case *snapEvery < 1:
		return fmt.Errorf("-snapshot-entries %d: at least 1", *snapEvery)
	}
	s := settings{
		Tick: *tick, TickMillis: tick.Milliseconds(),
		ElectionTicks: *election, HeartbeatTicks: *heartbeat,
		SnapshotEntries: *snapEvery, CompactKeep: 1024,
		Workers: *workers, DragonboatLogDB: "sharded Pebble, medium memory budget",
		DragonboatLogDBShards: *dbShards, Verbose: *verbose,
	}
	progress := func(format string, a ...any) {
		if *verbose || !*jsonOut {
			fmt.Fprintf(os.Stderr, format+"\n", a...)
		}
	}
	rep := report{
		Settings: s, WarmupSeconds: warmup.Seconds(), Seconds: duration.Seconds(),
		Runs: *runs, CPUs: runtime.NumCPU(), LoadBefore: loadAverage(),
		Startup: map[string][]float64{},
	}
	// results[groups][size][system] holds one measurement per run.
	type key struct{ groups, size int }
	results := map[key]map[string][]*measurement{}
	failures := 0
	for _, g := range groupCounts {
		for _, size := range sizes {
			results[key{g, size}] = map[string][]*measurement{}
		}
		for r := 0; r < *runs; r++ {
			order := append([]system(nil), chosen...)
			if r%2 == 1 {
				for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
					order[i], order[j] = order[j], order[i]
				}
			}
			for _, sys := range order {
				dir, err := os.MkdirTemp(*dirArg, "bench-groups-"+sys.name+"-")
				if err != nil {
					return err
				}
				t0 := time.Now()
				c, err := sys.start(s, dir, g)
				if err != nil {
					os.RemoveAll(dir)
					return fmt.Errorf("%s with %d groups: %w", sys.name, g, err)
				}
				up := time.Since(t0).Seconds()
				rep.Startup[fmt.Sprintf("%s/%d", sys.name, g)] = append(rep.Startup[fmt.Sprintf("%s/%d", sys.name, g)], up)
				progress("run %d: %s: %d groups led after %.1f s", r+1, sys.name, g, up)
				completed := make([]atomic.Uint64, g)
				failed := false
				for _, size := range sizes {
					var m measurement
					var err error
					// After a failure the cluster is in no state to
					// measure: the rest of this start's payloads are
					// reported failed too.
					if failed {
						err = errors.New("not measured after an earlier failure on this cluster")
					} else if m, err = measure(c, g, size, *proposers, *warmup, *duration, completed); err == nil {
						err = checkApplied(c, completed)
					}
					if err != nil {
						failed = true
						failures++
						m = measurement{Error: err.Error()}
						fmt.Fprintf(os.Stderr, "run %d: %s, %d groups, %d B: %v\n", r+1, sys.name, g, size, err)
						results[key{g, size}][sys.name] = append(results[key{g, size}][sys.name], &m)
						continue
					}
					progress("run %d: %s: %d groups, %d B: %.0f proposals/s, p50 %.0f µs, p99 %.0f µs, %.1f CPU µs/proposal",
						r+1, sys.name, g, size, m.ProposalsPerSec, m.P50Micros, m.P99Micros, m.CPUMicrosPerProp)
					results[key{g, size}][sys.name] = append(results[key{g, size}][sys.name], &m)
				}
				if err := c.close(); err != nil {
					os.RemoveAll(dir)
					return fmt.Errorf("%s: close: %w", sys.name, err)
				}
				// Deleted files' dirty pages are dropped instead of being
				// written back under the next library's run.
				if err := os.RemoveAll(dir); err != nil {
					return err
				}
			}
		}
	}
	rep.LoadAfter = loadAverage()
	for _, g := range groupCounts {
		for _, size := range sizes {
			byName := results[key{g, size}]
			cr := configResult{Groups: g, PayloadBytes: size, Proposers: *proposers}
			var ratios, p99Ratios, cpuRatios []float64
			for r := 0; r < *runs; r++ {
				var one run
				if ms := byName["embraft"]; len(ms) > r {
					one.Embraft = ms[r]
				}
				if ms := byName["dragonboat"]; len(ms) > r {
					one.Dragonboat = ms[r]
				}
				if one.Embraft != nil && one.Dragonboat != nil && one.Embraft.Error == "" && one.Dragonboat.Error == "" {
					one.Ratio = one.Embraft.ProposalsPerSec / one.Dragonboat.ProposalsPerSec
					one.P99Ratio = one.Embraft.P99Micros / one.Dragonboat.P99Micros
					one.CPURatio = one.Embraft.CPUMicrosPerProp / one.Dragonboat.CPUMicrosPerProp
					ratios = append(ratios, one.Ratio)
					p99Ratios = append(p99Ratios, one.P99Ratio)
					cpuRatios = append(cpuRatios, one.CPURatio)
				}
				cr.Runs = append(cr.Runs, one)
			}
			e, d := succeeded(byName["embraft"]), succeeded(byName["dragonboat"])
			cr.EmbraftProposalsPerSec = medianOf(e, func(m *measurement) float64 { return m.ProposalsPerSec })
			cr.EmbraftP50Micros = medianOf(e, func(m *measurement) float64 { return m.P50Micros })
			cr.EmbraftP99Micros = medianOf(e, func(m *measurement) float64 { return m.P99Micros })
			cr.EmbraftCPUMicros = medianOf(e, func(m *measurement) float64 { return m.CPUMicrosPerProp })
			cr.DragonboatProposalsPerSec = medianOf(d, func(m *measurement) float64 { return m.ProposalsPerSec })
			cr.DragonboatP50Micros = medianOf(d, func(m *measurement) float64 { return m.P50Micros })
			cr.DragonboatP99Micros = medianOf(d, func(m *measurement) float64 { return m.P99Micros })
			cr.DragonboatCPUMicros = medianOf(d, func(m *measurement) float64 { return m.CPUMicrosPerProp })
			cr.Ratio, cr.P99Ratio, cr.CPURatio = median(ratios), median(p99Ratios), median(cpuRatios)
			rep.Configs = append(rep.Configs, cr)
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printTable(rep)
	}
	if failures > 0 {
		return fmt.Errorf("%d measurement(s) failed (see `error` in the runs)", failures)
	}
	return nil
}

func printTable(rep report) {
	fmt.Printf("%d proposers, %g s per measurement after %g s of warm-up, median of %d run(s); load average %s before, %s after\n\n",
		rep.Configs[0].Proposers, rep.Seconds, rep.WarmupSeconds, rep.Runs, rep.LoadBefore, rep.LoadAfter)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "groups\tpayload\tembraft/s\tp50 µs\tp99 µs\tCPU µs\tdragonboat/s\tp50 µs\tp99 µs\tCPU µs\tratio\tp99 ratio\tCPU ratio\t")
	for _, c := range rep.Configs {
		fmt.Fprintf(w, "%d\t%d B\t%.0f\t%.0f\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%.1f\t%.2f\t%.2f\t%.2f\t\n",
			c.Groups, c.PayloadBytes,
			c.EmbraftProposalsPerSec, c.EmbraftP50Micros, c.EmbraftP99Micros, c.EmbraftCPUMicros,
			c.DragonboatProposalsPerSec, c.DragonboatP50Micros, c.DragonboatP99Micros, c.DragonboatCPUMicros,
			c.Ratio, c.P99Ratio, c.CPURatio)
	}
	w.Flush()
	fmt.Println("\nratio: embraft/dragonboat proposals/s; p99 and CPU ratios: embraft/dragonboat (below 1 is embraft's lower)")
	for _, c := range rep.Configs {
		for i, r := range c.Runs {
			for _, m := range []*measurement{r.Embraft, r.Dragonboat} {
				if m != nil && m.Error != "" {
					fmt.Printf("failed: %d groups, %d B, run %d: %s\n", c.Groups, c.PayloadBytes, i+1, m.Error)
				}
			}
		}
	}
}

func parseInts(s string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if n < least {
			return nil, fmt.Errorf("%d: at least %d", n, least)
		}
		out = append(out, n)
	}
	return out, nil
}

// succeeded leaves out the failed measurements (kept in `runs`).
func succeeded(ms []*measurement) []*measurement {
	var ok []*measurement
	for _, m := range ms {
		if m.Error == "" {
			ok = append(ok, m)
		}
	}
	return ok
}

func medianOf(ms []*measurement, f func(*measurement) float64) float64 {
	vs := make([]float64, len(ms))
	for i, m := range ms {
		vs[i] = f(m)
	}
	return median(vs)
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	vs = append([]float64(nil), vs...)
	sort.Float64s(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
