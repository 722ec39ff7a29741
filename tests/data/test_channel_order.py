"""OpenCV's B, G, R(, A) and our R, G, B(, thermal): the helpers of util.data.layout, one home for that fact."""
import numpy as np
import pytest

from util.data.layout import cv2_from_rgb, rgb_from_cv2


@pytest.mark.parametrize("channels", [3, 4])
def test_red_and_blue_swap_and_a_fourth_channel_stays(channels):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    swapped = image[:, :, [2, 1, 0, 3][:channels]]
    np.testing.assert_array_equal(rgb_from_cv2(image), swapped)
    np.testing.assert_array_equal(cv2_from_rgb(image), swapped)
    np.testing.assert_array_equal(cv2_from_rgb(rgb_from_cv2(image)), image)
