"""Does the reach follow the cube? Slopes of the palm's closest approach on the cube position.

Over a set of episodes, regress the palm's position at its closest approach to the cube
(x and y separately, ordinary least squares) on the cube's start position. An expert that
reaches for the cube scores slopes near 1; a policy that ignores the image reaches to the
same place whatever the cube's position and scores slopes near 0; in between, the reach is
pulled towards the average cube position (the symptom issue 9 measured: 0.7 in x, 0.4 in y).
"""
import numpy as np


def slope(x, y):
    """OLS fit y = a + b x: (b, a, r2); NaN when x does not vary."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float('nan'), float('nan'), float('nan')
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(residual ** 2) / total if total > 0 else float('nan')
    return float(b), float(a), float(r2)


def reach_summary(episodes):
    """Slopes and closest-approach statistics of episode dicts (``closed_loop.Episode``).

    Returns {slope_x, slope_y, r2_x, r2_y, closest_cm_median, closest_cm_mean, reached
    (share within 6 cm), episodes}.
    """
    eps = [e for e in episodes if np.isfinite(e['closest_cm'])]
    cube = np.array([e['cube_start'][:2] for e in eps]).reshape(-1, 2)
    palm = np.array([e['palm_at_closest'][:2] for e in eps]).reshape(-1, 2)
    closest = np.array([e['closest_cm'] for e in eps])
    sx, _, rx = slope(cube[:, 0], palm[:, 0]) if len(eps) else (np.nan,) * 3
    sy, _, ry = slope(cube[:, 1], palm[:, 1]) if len(eps) else (np.nan,) * 3
    return {'slope_x': sx, 'slope_y': sy, 'r2_x': rx, 'r2_y': ry,
            'closest_cm_median': float(np.median(closest)) if len(eps) else float('nan'),
            'closest_cm_mean': float(np.mean(closest)) if len(eps) else float('nan'),
            'reached': float(np.mean(closest < 6.0)) if len(eps) else float('nan'),
            'episodes': len(eps)}
