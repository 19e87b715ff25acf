"""Residents as staff know them: the staff-side profile (氏名, ふりがな, 住所, 連絡メモ, 鍵の預け先)."""
