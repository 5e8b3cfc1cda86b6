// Command benchreport is `make bench`: it runs the server verification
// benchmarks of pkg/server/session (BenchmarkServerVerify, BenchmarkServerFloor
// and BenchmarkServerRatio, which replay one recorded attestation per event
// log: 677 bytes, the real 45 KB Ubuntu 24.04 log and the real 73 KB
// option-ROM log) and prints, per log, the server's verification time, its
// crypto floor measured in the same run, their ratio, and the bytes
// allocated per attestation beyond the log's own size. docs/performance.md
// says what the floor is and how to read the figures.
//
// It needs cgo and the simulator (build tag tpmsimulator), as the
// benchmarks record the agent's answers on it, and the real evidence folder
// (internal/realdata) for the two real logs; without it those rows are
// skipped.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

func main() {
	count := flag.Int("count", 3, "runs of each benchmark (go test -count)")
	benchtime := flag.String("benchtime", "1s", "go test -benchtime")
	verbose := flag.Bool("v", false, "also print go test's output")
	flag.Parse()

	args := []string{"test", "-tags", "tpmsimulator", "-run", "^$",
		"-bench", "^BenchmarkServer(Verify|Floor|Ratio)$", "-benchmem",
		"-count", strconv.Itoa(*count), "-benchtime", *benchtime, "./pkg/server/session/"}
	fmt.Printf("go %s\n\n", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if *verbose {
		os.Stdout.Write(out)
	}
	if err != nil {
		os.Stdout.Write(out)
		fmt.Fprintf(os.Stderr, "benchreport: go test: %v\n", err)
		os.Exit(1)
	}
	rows, err := parse(bytes.NewReader(out))
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "benchreport: no benchmark results (is the simulator built? CGO_ENABLED=1 and a C compiler are needed)")
		os.Exit(1)
	}
	report(os.Stdout, rows)
}

// result is one benchmark line: its metrics by unit.
type result map[string]float64

// logRow gathers every run of the three benchmarks for one log.
type logRow struct {
	name                 string
	verify, floor, ratio []result
}

var lineRE = regexp.MustCompile(`^Benchmark(Server(?:Verify|Floor|Ratio))/(\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

func parse(r io.Reader) ([]*logRow, error) {
	byName := map[string]*logRow{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		fields := strings.Fields(m[4])
		res := result{}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", sc.Text(), err)
			}
			res[fields[i+1]] = v
		}
		row := byName[m[2]]
		if row == nil {
			row = &logRow{name: m[2]}
			byName[m[2]] = row
			order = append(order, m[2])
		}
		switch m[1] {
		case "ServerVerify":
			row.verify = append(row.verify, res)
		case "ServerFloor":
			row.floor = append(row.floor, res)
		case "ServerRatio":
			row.ratio = append(row.ratio, res)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	rows := make([]*logRow, 0, len(order))
	for _, n := range order {
		rows = append(rows, byName[n])
	}
	return rows, nil
}

// stat is the median of unit over runs, with the minimum and maximum.
func stat(runs []result, unit string) (med, lo, hi float64, ok bool) {
	var v []float64
	for _, r := range runs {
		if x, found := r[unit]; found {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, 0, 0, false
	}
	slices.Sort(v)
	return v[len(v)/2], v[0], v[len(v)-1], true
}

func us(ns float64) string { return fmt.Sprintf("%.0f µs", ns/1e3) }

func spread(lo, hi float64, f func(float64) string) string {
	return fmt.Sprintf("%s..%s", strings.TrimSuffix(f(lo), " µs"), f(hi))
}

func report(w io.Writer, rows []*logRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "log\tverify/op\tfloor/op\tratio\tinterleaved ratio\tCPU verify\tCPU floor\tCPU ratio\tB/op\tbeyond log\tallocs/op\t")
	for _, r := range rows {
		cells := []string{r.name}
		v, vlo, vhi, vok := stat(r.verify, "ns/op")
		f, flo, fhi, fok := stat(r.floor, "ns/op")
		if vok && fok {
			cells = append(cells, us(v)+" ("+spread(vlo, vhi, us)+")", us(f)+" ("+spread(flo, fhi, us)+")", fmt.Sprintf("%.2f", v/f))
		} else {
			cells = append(cells, "-", "-", "-")
		}
		if ir, irlo, irhi, ok := stat(r.ratio, "ratio"); ok {
			cells = append(cells, fmt.Sprintf("%.2f (%.2f..%.2f)", ir, irlo, irhi))
		} else {
			cells = append(cells, "-")
		}
		cv, _, _, cok := stat(r.ratio, "verify-cpu-ns/op")
		cf, _, _, _ := stat(r.ratio, "floor-cpu-ns/op")
		cr, crlo, crhi, _ := stat(r.ratio, "cpu-ratio")
		if cok {
			cells = append(cells, us(cv), us(cf), fmt.Sprintf("%.2f (%.2f..%.2f)", cr, crlo, crhi))
		} else {
			cells = append(cells, "-", "-", "-")
		}
		b, _, _, bok := stat(r.verify, "B/op")
		lb, _, _, _ := stat(r.verify, "log-bytes")
		a, _, _, _ := stat(r.verify, "allocs/op")
		if bok {
			cells = append(cells, fmt.Sprintf("%.0f", b), fmt.Sprintf("%.0f", b-lb), fmt.Sprintf("%.0f", a))
		} else {
			cells = append(cells, "-", "-", "-")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w, "\nverify/op and floor/op: medians of BenchmarkServerVerify and BenchmarkServerFloor (min..max over the runs);")
	fmt.Fprintln(w, "interleaved and CPU: BenchmarkServerRatio, which alternates both in one loop so that they see the same machine load;")
	fmt.Fprintln(w, "CPU is the benchmark thread's CPU time (Linux), which other processes do not inflate (medians, min..max of the ratio).")
	fmt.Fprintln(w, "beyond log: B/op less the log's size. Goals (docs/performance.md): ratio <= 2 and beyond log <= 65536 for the 45 KB log.")
}
