# Draws benchmarks/shaping.cpp's CSV: one panel per limiter, the requests it
# admitted per 100 ms (coloured bars) over the requests offered (grey), and a
# last panel with every limiter's running total against the average rate.
#
#   gnuplot -e "csv='shaping.csv'; out='docs/shaping.png'" benchmarks/shaping.gp
if (!exists("csv")) csv = 'shaping.csv'
if (!exists("out")) out = 'shaping.png'

set terminal pngcairo size 960,1240 font 'DejaVu Sans,10' noenhanced
set output out
set datafile separator ','
set key autotitle columnheader

names = 'token_bucket leaky_bucket fixed_window sliding_window_log sliding_window_counter'
labels = "'token_bucket(10/s, capacity 10)' 'leaky_bucket(10/s), try_acquire' 'fixed_window(10, 1 s)' 'sliding_window_log(10, 1 s)' 'sliding_window_counter(10, 1 s)'"
colors = '#1f77b4 #2ca02c #d62728 #9467bd #ff7f0e'
n = words(names)

# Totals for the panel titles.
stats csv using 2 nooutput
offered_total = int(STATS_sum)
array admitted_total[n]
do for [i = 1:n] {
    stats csv using (column(i + 2)) nooutput
    admitted_total[i] = int(STATS_sum)
}

set multiplot title sprintf("One bursty load offered to every limiter at the same average rate, 10/s\n%d requests in 10 s: a 4/s trickle, bursts of 30 within 100 ms of t = 1, 3, 5 s, 30/s more from 6.5 to 8.5 s\n(simulated time; each request tries once, no retries; windows start at t = 0 s)", offered_total) font ',12'

left = 0.07; right = 0.97; top = 0.93; gap = 0.026
panel = (top - 0.30) / n      # height of a bar panel with the gap above it; the totals panel takes the bottom 0.30
set lmargin at screen left
set rmargin at screen right
set xrange [0:10]
set xtics 1
set mxtics 10
set grid xtics
set yrange [0:22]
set ytics 0, 5, 20
set style fill solid 1.0 noborder
set boxwidth 0.08 absolute
set label 1 'per 100 ms' at screen 0.012, screen (top - n * panel / 2) rotate by 90 center font ',11'

do for [i = 1:n] {
    set tmargin at screen top - (i - 1) * panel - gap
    set bmargin at screen top - i * panel
    set format x (i == n ? '%g' : '')
    if (i == 1) { set key top right horizontal reverse Left samplen 1.5 width 1 opaque box lc rgb '#cccccc' } else { unset key }
    set title sprintf('%s: %d of %d admitted', word(labels, i), admitted_total[i], offered_total) offset 0, -0.6 font ',11'
    plot csv using ($1 + 0.05):2 with boxes lc rgb '#c8c8c8' title 'offered', \
         ''  using ($1 + 0.05):(column(i + 2)) with boxes lc rgb word(colors, i) title 'admitted', \
         1 with lines dt 2 lw 1.5 lc rgb '#444444' title 'average rate (1 per 100 ms)'
    unset label 1
}

# Running totals: admitted since t = 0 for every limiter, against 10/s and offered.
set tmargin at screen 0.25
set bmargin at screen 0.045
set format x '%g'
set xlabel 'time (s)'
set ylabel 'admitted since t = 0'
set yrange [0:*]
set ytics autofreq
set title 'Running totals: what each admitted since t = 0, against the token bucket bound' offset 0, -0.6 font ',11'
set key top left vertical reverse Left samplen 2 width 0 opaque box lc rgb '#cccccc'
plot csv using 1:2 smooth cumulative with lines lw 2 dt 3 lc rgb '#888888' title 'offered', \
     10 * x + 10 with lines dt 2 lw 1.5 lc rgb '#444444' title 'capacity + 10/s x t (the token bucket bound)', \
     for [i = 1:n] csv using ($1 + 0.1):(column(i + 2)) smooth cumulative with steps lw 2 lc rgb word(colors, i) title word(names, i)
unset multiplot
