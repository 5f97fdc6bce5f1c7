package routes

import "strconv"

// checkUpstreamTraffic checks health checks, retries and circuit breaking.
func (c *checker) checkUpstreamTraffic(p string, u Upstream) {
	if h := u.HealthCheck; h != nil {
		if len(h.Path) == 0 || h.Path[0] != '/' {
			c.errorf(p+".health_check.path", "must start with \"/\"")
		}
		if h.HealthyThreshold < 0 || h.UnhealthyThreshold < 0 {
			c.errorf(p+".health_check", "thresholds must not be negative")
		}
		if h.Interval != 0 && h.Timeout > h.Interval {
			c.errorf(p+".health_check.timeout", "exceeds the interval")
		}
	}
	if r := u.Retries; r != nil {
		if r.Attempts < 0 {
			c.errorf(p+".retries.attempts", "must not be negative")
		}
		if r.BudgetPercent < 0 || r.BudgetPercent > 100 {
			c.errorf(p+".retries.budget_percent", "must be between 0 and 100")
		}
		for i, on := range r.On {
			switch on {
			case "connect_failure", "reset", "timeout":
			default:
				if n, err := strconv.Atoi(on); err != nil || n < 500 || n > 599 {
					c.errorf(indexPath(p+".retries.on", i), "%q: use connect_failure, reset, timeout or a 5xx status code", on)
				}
			}
		}
	}
	if b := u.CircuitBreaker; b != nil {
		if b.MaxPending < 0 || b.MaxRequests < 0 || b.Consecutive5xx < 0 {
			c.errorf(p+".circuit_breaker", "limits must not be negative")
		}
	}
}
